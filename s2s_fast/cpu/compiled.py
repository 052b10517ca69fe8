"""The compiled kernels behind the cpu backend: the library s2s_fast._cpu (csrc/cpu/), which registers the
torch.ops.s2s_fast.cpu_* operators on the CPU.

Importing this module never fails: without the library, ``extension_module`` is None and ``MISSING_REASON`` says
why and how to build it. ``KERNEL_CAPABILITY`` names the instruction set its kernels run with (AVX512, AVX2 or
DEFAULT: the best the library was built for that torch also runs with, see csrc/cpu/capability.h).
"""

from __future__ import annotations

import importlib

import torch

BUILD_HINT = ("pip install --no-build-isolation -e . builds it wherever torch and a C++ compiler are (unless "
              "S2S_FAST_BUILD_CPU=0); in a source tree, python setup.py build_ext --inplace")
SERVED_DTYPES = (torch.float32, torch.float64)


def _load() -> tuple[object | None, str | None]:
    try:
        # import_module, not "from s2s_fast import _cpu": s2s_fast is still initialising when the registry imports this.
        return importlib.import_module("s2s_fast._cpu"), None
    except ImportError as error:
        return None, f"the cpu backend's kernels s2s_fast._cpu are not built ({error}); {BUILD_HINT}"


extension_module, MISSING_REASON = _load()
KERNEL_CAPABILITY = torch.ops.s2s_fast.cpu_kernel_capability() if extension_module is not None else None


def dtype_limit(tensor: torch.Tensor) -> str | None:
    """The dtype limit every cpu kernel shares: float32 and float64."""
    if tensor.dtype not in SERVED_DTYPES:
        return (f"{tensor.dtype} is not served by the cpu backend (its kernels take float32 and float64); the "
                "reference backend serves it")
    return None


def refuse_unsaved(op: str, saved: bool) -> None:
    """Raise when the backward of a forward called with ``save=False`` runs: that forward kept nothing for it (the op
    called directly; s2s_fast.functional passes save=True whenever a gradient is recorded)."""
    if not saved:
        raise RuntimeError(f"{op}: its forward was called with save=False, so it kept nothing for the backward; call "
                           "it with save=True, or through s2s_fast.functional, which does so when a gradient is "
                           "recorded")
