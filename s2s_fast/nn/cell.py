"""Drop-in LSTMCell and GRUCell: torch.nn's parameters and forward, computed through s2s_fast.functional."""

from __future__ import annotations

import torch

from .. import functional as F
from ..functional import InputError, InputTypeError
from ..backends import check_backend_name
from .torchscript import NotScriptable


def _batched(module, input: torch.Tensor, states: tuple) -> tuple[bool, torch.Tensor, tuple]:
    """Check dims like torch's cells; return (was batched, input [B, I], states [B, H] or None)."""
    kind = type(module).__name__
    if not isinstance(input, torch.Tensor):
        raise InputTypeError(f"{kind}: input must be a tensor, got {type(input).__name__}")
    if input.dim() not in (1, 2):
        raise InputError(f"{kind}: expected input to be 1-d (unbatched) or 2-d (batched), got {input.dim()}-d")
    if input.shape[-1] != module.input_size:
        raise InputError(f"{kind}: input.size(-1) must be input_size = {module.input_size}, got {input.shape[-1]}")
    batched = input.dim() == 2
    checked = []
    for state in states:
        if state is not None and state.dim() != input.dim():
            raise InputError(f"{kind}: for {input.dim()}-d input, the hidden state must be {input.dim()}-d, "
                             f"got {state.dim()}-d")
        checked.append(state if state is None or batched else state.unsqueeze(0))
    return batched, (input if batched else input.unsqueeze(0)), tuple(checked)


class LSTMCell(NotScriptable, torch.nn.LSTMCell):
    """torch.nn.LSTMCell with the same arguments, parameters and forward, plus ``backend=``."""

    # torch's own signature (device and dtype named: torch.nn.utils.skip_init looks for them), plus backend.
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str | None = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, input, hx=None):
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2
                               or not all(isinstance(state, torch.Tensor) for state in hx)):
            # (None, c) read as no state at all: the c given was dropped, silently.
            got = [type(s).__name__ for s in hx] if isinstance(hx, (tuple, list)) else type(hx).__name__
            raise InputTypeError(f"LSTMCell: hx must be a pair (h, c) of tensors, or None, got {got}")
        batched, input, (h, c) = _batched(self, input, (None, None) if hx is None else tuple(hx))
        if h is None:
            h = c = input.new_zeros(input.shape[0], self.hidden_size)
        hy, cy = F.lstm_cell(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                             backend=self.backend)
        return (hy, cy) if batched else (hy.squeeze(0), cy.squeeze(0))


class GRUCell(NotScriptable, torch.nn.GRUCell):
    """torch.nn.GRUCell with the same arguments, parameters and forward, plus ``backend=``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str | None = None):
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.backend = None if backend is None else check_backend_name(backend)

    def forward(self, input, hx=None):
        if hx is not None and not isinstance(hx, torch.Tensor):
            raise InputTypeError(f"GRUCell: hx must be a tensor, or None, got {type(hx).__name__}")
        batched, input, (h,) = _batched(self, input, (hx,))
        if h is None:
            h = input.new_zeros(input.shape[0], self.hidden_size)
        hy = F.gru_cell(input, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, backend=self.backend)
        return hy if batched else hy.squeeze(0)
