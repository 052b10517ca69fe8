"""Drop-in Linear: torch.nn.Linear's parameters and forward, computed through s2s_fast.functional.linear."""

from __future__ import annotations

import torch

from .. import functional as F
from ..backends import check_backend_name
from .torchscript import NotScriptable


class Linear(NotScriptable, torch.nn.Linear):
    """torch.nn.Linear with the same arguments, parameters and forward, plus ``backend=`` (on a CPU whose float32
    products torch runs slowly, the cpu backend runs them through oneDNN; see s2s_fast.functional.linear)."""

    # torch's own signature (device and dtype named: torch.nn.utils.skip_init looks for them), plus backend.
    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str | None = None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias, backend=self.backend)
