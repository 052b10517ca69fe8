"""The compiled extension s2s_fast._C (it registers the torch.ops.s2s_fast operators) and checks shared by the ops.

Importing this module never fails: without the extension, ``extension_module`` is None and ``MISSING_REASON`` says
why and how to build it.
"""

from __future__ import annotations

import importlib

import torch

BUILD_HINT = ("build it on a machine with a CUDA build of torch and nvcc: pip install --no-build-isolation -e . "
              "(S2S_FAST_BUILD_CUDA=1 makes that install fail, saying why, instead of skipping the extension)")

# A constant, so that the availability check traces under torch.compile without formatting anything.
try:
    # import_module, not "from s2s_fast import _C": s2s_fast is still initialising when the registry imports this.
    extension_module = importlib.import_module("s2s_fast._C")
except ImportError as error:
    extension_module = None
    MISSING_REASON: str | None = f"the CUDA extension s2s_fast._C is not built ({error}); {BUILD_HINT}"
else:
    MISSING_REASON = None

SERVED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtype_limit(tensor: torch.Tensor) -> str | None:
    """The dtype limit every cuda kernel shares: float32, float16 and bfloat16 only."""
    if tensor.dtype not in SERVED_DTYPES:
        return (f"{tensor.dtype} is not served by the cuda backend (its kernels take float32, float16 and "
                "bfloat16); use backend='reference' for it")
    return None


def needs_grad(*tensors) -> bool:
    """Whether autograd will record this call: grad mode on and some input requiring a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
