"""The C allocator's settings for `s2s-fast train`.

glibc's malloc gives large blocks back to the kernel when they are freed: each block from its mmap threshold (128 KiB
at first, raised as mapped blocks are freed, to 32 MiB at most) is a mapping of its own, unmapped when freed, and the
top of the heap beyond its trim threshold is trimmed. A training step allocates and frees the same large tensors
(gate buffers, gradients) at every step, so their pages are faulted in and zeroed by the kernel again at every step:
on the 2-core Intel Xeon (2026-12-07, the g2p trainer's step at one thread, `--matmul-precision medium`, perf) 12% of
the step's samples were in the kernel (page faults, zeroing pages, memory accounting). With the mmap threshold at
32 MiB and the trim threshold at 1 GiB the process keeps that memory and reuses it (1.2% in the kernel): the step
took 0.90-0.92x its time (two rounds of 60 steps, held and glibc's defaults side by side, one per core; 0.86x over
600 steps with the thresholds from the environment), its peak resident memory within 3% (1.43-1.44 GiB against
1.42-1.43 after 80 steps; 2.16 against 2.17 after 620): benchmarks/results/cpu-intel-xeon-amx-2026-12-07-allocator/.
The g2p model's dev evaluation (beam 5) took the same time either way (18-19 s against 18), so evaluate and decode
leave glibc as it is.

hold_freed_memory sets both, once per process, on Linux with glibc as the allocator. Either threshold in the
environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, or glibc.malloc.mmap_threshold / trim_threshold in
GLIBC_TUNABLES, which glibc reads at start) turns this off, both then left to glibc; so does another allocator in
LD_PRELOAD (jemalloc, tcmalloc, mimalloc), and S2S_FAST_HOLD_FREED_MEMORY=0, which leaves glibc's own behaviour.
mimalloc in LD_PRELOAD ran the same trainer 0.95x as fast as these settings over 2,500 steps side by side, in 0.58x
their peak resident memory (benchmarks/results/cpu-intel-xeon-amx-2026-12-07-process-age/, item 5).
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20  # glibc's largest (HEAP_MAX / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
SWITCH = "S2S_FAST_HOLD_FREED_MEMORY"  # "0": set nothing
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h

_note: str | None = None
_decided = False


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # a C library without the name (musl)
        return False


def _left_to_the_environment() -> bool:
    """Whether the environment sets either threshold, preloads another allocator, or turns this off (SWITCH=0)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    preloaded = os.environ.get("LD_PRELOAD", "")
    return (any(name in os.environ for name in ENVIRONMENT) or any(name in tunables for name in TUNABLES)
            or any(name in preloaded for name in OTHER_ALLOCATORS) or os.environ.get(SWITCH) == "0")


def hold_freed_memory() -> str | None:
    """Set glibc's mmap threshold to MMAP_THRESHOLD and its trim threshold to TRIM_THRESHOLD (once per process; later
    calls return the first call's answer). Returns the note for the run's log, or None where nothing was set: not
    glibc, left to the environment (module docstring), or glibc refused."""
    global _note, _decided
    if _decided:
        return _note
    _decided = True
    if not _glibc() or _left_to_the_environment():
        return None
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return None
    _note = (f"glibc's malloc keeps freed memory for reuse (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
             f"{TRIM_THRESHOLD >> 30} GiB; {SWITCH}=0 leaves glibc's own)")
    return _note


def held_note() -> str | None:
    """hold_freed_memory's note if it has set the thresholds in this process, else None."""
    return _note
