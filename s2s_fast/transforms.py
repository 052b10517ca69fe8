"""Which of torch.func's transforms, and whether torch.autograd.forward_ad, apply to a call: what decides the backends
that can serve it (s2s_fast.backends) and whether the reference's own autograd.Functions step aside for plain torch
ops (s2s_fast.functional, s2s_fast.reference.time_loop).

- "grad": under torch.func.grad, grad_and_value, vjp, jacrev (and hessian's inner transform);
- "jvp": under torch.func.jvp, jacfwd, hessian, or with a forward-mode dual tensor (torch.autograd.forward_ad) among
  the call's arguments;
- "vmap": under torch.func.vmap.

Under torch.compile, a region that runs inside a transform (torch.func.grad(torch.compile(f))) is told that every
transform applies: which ones cannot be read in a trace without breaking the graph. Outside any transform, nothing is
reported, there as here.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C._functorch import TransformType
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

NONE: frozenset = frozenset()
EVERY: frozenset = frozenset(("grad", "jvp", "vmap"))
_NAMES = {TransformType.Grad: "grad", TransformType.Jvp: "jvp", TransformType.Vmap: "vmap"}


def active(args: tuple = ()) -> frozenset:
    """The names ("grad", "jvp", "vmap") that apply to a call with ``args``; NONE, at once, where none does."""
    functorch = torch._C._are_functorch_transforms_active()
    dual_level = forward_ad._current_level >= 0
    if not (functorch or dual_level):
        return NONE
    if torch.compiler.is_compiling():
        return EVERY
    names = {_NAMES[i.key()] for i in retrieve_all_functorch_interpreters() if i.key() in _NAMES} if functorch \
        else set()
    if dual_level and any(isinstance(a, torch.Tensor) and forward_ad.unpack_dual(a).tangent is not None
                          for a in args):
        names.add("jvp")
    return frozenset(names)
