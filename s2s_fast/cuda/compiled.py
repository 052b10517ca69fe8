"""The compiled kernels behind the cuda backend, and the checks its ops share.

Two builds of the same csrc/ sources register the torch.ops.s2s_fast operators:

- ``s2s_fast._C``, built with nvcc against a CUDA build of torch: the kernels run on CUDA tensors;
- ``s2s_fast._C_emulated``, built by the host compiler against csrc/emulation/: the kernels run on CPU tensors,
  thread by thread with real barriers, as the GPU named by ``S2S_FAST_CUDA_EMULATE`` (``h100``, ``h200``; ``1``
  means h100) would run them. Set the variable before ``import s2s_fast``; it then replaces ``_C`` for the whole
  process. ``S2S_FAST_CUDA_EMULATE_SEED`` picks the order in which emulated threads run between barriers.

Importing this module never fails: without the library, ``extension_module`` is None and ``MISSING_REASON`` says
why and how to build it.
"""

from __future__ import annotations

import importlib
import os

import torch

EMULATE_VARIABLE = "S2S_FAST_CUDA_EMULATE"
EMULATED_GPUS = {"1": "h100", "h100": "h100", "h200": "h200"}

BUILD_HINT = ("build it on a machine with a CUDA build of torch and nvcc: pip install --no-build-isolation -e . "
              "(S2S_FAST_BUILD_CUDA=1 makes that install fail, saying why, instead of skipping the extension)")
EMULATION_BUILD_HINT = ("pip install --no-build-isolation -e . builds it wherever torch and a C++ compiler are "
                        "(unless S2S_FAST_BUILD_EMULATION=0)")


def _emulated_gpu() -> tuple[str | None, str | None]:
    """(the emulated GPU or None, the problem with the variable or None)."""
    value = os.environ.get(EMULATE_VARIABLE, "").strip().lower()
    if value in ("", "0"):
        return None, None
    if value not in EMULATED_GPUS:
        return None, (f"{EMULATE_VARIABLE}={value!r} names no emulated GPU; use "
                      f"{', '.join(sorted(EMULATED_GPUS))} (1 means h100), or unset it for a real GPU")
    return EMULATED_GPUS[value], None


def _load() -> tuple[object | None, str | None, str | None]:
    """(the library module or None, why it is missing or None, the emulated GPU or None)."""
    emulated, problem = _emulated_gpu()
    if problem is not None:
        return None, problem, None
    name = "s2s_fast._C_emulated" if emulated else "s2s_fast._C"
    try:
        # import_module, not "from s2s_fast import _C": s2s_fast is still initialising when the registry imports this.
        return importlib.import_module(name), None, emulated
    except ImportError as error:
        hint = EMULATION_BUILD_HINT if emulated else BUILD_HINT
        what = "the CUDA emulation" if emulated else "the CUDA extension"
        return None, f"{what} {name} is not built ({error}); {hint}", emulated


extension_module, MISSING_REASON, EMULATED_GPU = _load()
# The kernels' fixed size limits, as the extension states them (csrc/*.h); empty without the extension.
KERNEL_LIMITS: dict[str, int] = {} if extension_module is None else dict(zip(
    ("attention_max_width", "attention_max_batch", "lstm_cell_fused_max_batch", "lstm_layer_max_pairs"),
    torch.ops.s2s_fast.cuda_kernel_limits()))
# The device type whose tensors the kernels take.
KERNEL_DEVICE_TYPE = "cpu" if EMULATED_GPU else "cuda"

SERVED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def wrong_device_reason(device: torch.device) -> str | None:
    """None when the kernels take tensors on ``device``, else why not."""
    if device.type == KERNEL_DEVICE_TYPE:
        return None
    if EMULATED_GPU:
        return (f"under {EMULATE_VARIABLE}={EMULATED_GPU} the cuda backend runs its kernels on CPU tensors only "
                "(an emulation)")
    return "the cuda backend runs on CUDA tensors only"


def device_limits(device: torch.device) -> tuple[int, int]:
    """(multiprocessors, opt-in shared memory per block in bytes) of the GPU the kernels run on: the device's own,
    or the emulated GPU's."""
    if EMULATED_GPU:
        multiprocessors, shared = torch.ops.s2s_fast.cuda_device_limits(0)
        return multiprocessors, shared
    properties = torch.cuda.get_device_properties(device)
    return properties.multi_processor_count, getattr(properties, "shared_memory_per_block_optin", 48 * 1024)


def dtype_limit(tensor: torch.Tensor) -> str | None:
    """The dtype limit every cuda kernel shares: float32, float16 and bfloat16 only."""
    if tensor.dtype not in SERVED_DTYPES:
        return (f"{tensor.dtype} is not served by the cuda backend (its kernels take float32, float16 and "
                "bfloat16); use backend='reference' for it")
    return None


def needs_grad(*tensors) -> bool:
    """Whether autograd will record this call: grad mode on and some input requiring a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
