"""Drop-in Dropout: torch.nn.Dropout's arguments and forward, computed through s2s_fast.functional.dropout."""

from __future__ import annotations

import torch

from .. import functional as F
from ..backends import check_backend_name
from .torchscript import NotScriptable


class Dropout(NotScriptable, torch.nn.Dropout):
    """torch.nn.Dropout with the same arguments and behaviour in training and eval, plus ``backend=`` (on a CPU the
    cpu backend makes the mask several times as fast as torch; see s2s_fast.functional.dropout). ``inplace`` is
    refused: the cpu backend writes a new tensor."""

    def __init__(self, p: float = 0.5, inplace: bool = False, *, backend: str | None = None):
        if inplace:
            raise ValueError("s2s_fast.nn.Dropout: inplace=True is not supported; use torch.nn.Dropout for that")
        super().__init__(p, inplace)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, input):
        if self.inplace:  # set after construction (code that walks a model's torch.nn.Dropout modules, say)
            raise ValueError("s2s_fast.nn.Dropout: inplace=True is not supported; use torch.nn.Dropout for that")
        return F.dropout(input, self.p, self.training, backend=self.backend)
