"""s2s_fast.allocator: the command-line tools keep freed memory for reuse under glibc, unless the environment says
otherwise. Each case runs in a process of its own (the setting is the process's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from s2s_fast import allocator

glibc = pytest.mark.skipif(not allocator._glibc(), reason="glibc's malloc (Linux) only")

# Frees a 24 MiB block (above glibc's default mmap threshold, under the held one) and prints whether the thresholds
# were held and how many MiB of resident memory the free gave back to the kernel. allocator.py is loaded by its path:
# importing the package would import torch, whose frees could raise glibc's moving mmap threshold first.
_SCRIPT = """
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

held = sys.argv[1] == "hold" and allocator.hold_freed_memory() is not None
assert allocator.held_note() is (allocator.hold_freed_memory() if held else None)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size = 24 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
before = resident()
libc.free(block)
print(held, (before - resident()) >> 20)
"""


def _freed(mode: str, **environment) -> tuple[bool, int]:
    env = {name: value for name, value in os.environ.items()
           if name not in (*allocator.ENVIRONMENT, allocator.SWITCH, "GLIBC_TUNABLES", "LD_PRELOAD")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", _SCRIPT, mode, allocator.__file__], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    held, given_back = result.stdout.split()
    return held == "True", int(given_back)


@glibc
def test_held_thresholds_keep_a_freed_block_for_reuse():
    """glibc's defaults give a freed 24 MiB block back to the kernel (its own mapping); held, the process keeps it."""
    assert _freed("default") == (False, pytest.approx(24, abs=2))
    held, given_back = _freed("hold")
    assert held and given_back <= 1


@glibc
@pytest.mark.parametrize("name, value", [(name, "131072") for name in allocator.ENVIRONMENT] +
                         [("GLIBC_TUNABLES", f"{name}=131072") for name in allocator.TUNABLES] +
                         [(allocator.SWITCH, "0")])
def test_an_environment_that_sets_either_threshold_or_the_switch_keeps_glibcs(name, value):
    """Either threshold in the environment (here glibc's initial value, through MALLOC_*_ or GLIBC_TUNABLES), or
    S2S_FAST_HOLD_FREED_MEMORY=0: hold_freed_memory sets nothing (no note) and the block goes back to the kernel."""
    held, given_back = _freed("hold", **{name: value})
    assert not held and given_back == pytest.approx(24, abs=2)


def test_another_allocator_preloaded_is_left_alone(monkeypatch):
    """With jemalloc, tcmalloc or mimalloc in LD_PRELOAD, mallopt is not glibc's to set (nor the note true)."""
    monkeypatch.setattr(allocator, "_note", None)
    monkeypatch.setattr(allocator, "_decided", False)
    monkeypatch.setattr(allocator, "_glibc", lambda: True)
    for name in (*allocator.ENVIRONMENT, allocator.SWITCH, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator.hold_freed_memory() is None and allocator.held_note() is None
