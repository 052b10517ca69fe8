"""Drop-in Linear: torch.nn.Linear's parameters and forward, computed through s2s_fast.functional.linear."""

from __future__ import annotations

import torch

from .. import functional as F
from ..backends import check_backend_name
from .torchscript import NotScriptable


class Linear(NotScriptable, torch.nn.Linear):
    """torch.nn.Linear with the same arguments, parameters and forward, plus ``backend=`` (on a CPU whose float32
    products torch runs slowly, the cpu backend runs them through oneDNN; see s2s_fast.functional.linear)."""

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias, backend=self.backend)
