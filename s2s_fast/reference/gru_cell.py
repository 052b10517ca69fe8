"""Reference GRU cell in pure PyTorch, torch.nn.GRUCell's gate order (r, z, n) and formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gru_pointwise(input_gates: torch.Tensor, hidden_gates: torch.Tensor, hx: torch.Tensor) -> torch.Tensor:
    """The cell's pointwise part. input_gates = W_ih x + b_ih [B, 3H], hidden_gates = W_hh h + b_hh [B, 3H]."""
    input_reset, input_update, input_new = input_gates.chunk(3, dim=-1)
    hidden_reset, hidden_update, hidden_new = hidden_gates.chunk(3, dim=-1)
    reset = torch.sigmoid(input_reset + hidden_reset)
    update = torch.sigmoid(input_update + hidden_update)
    new = torch.tanh(input_new + reset * hidden_new)
    return new + update * (hx - new)


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step. input [B, I], hx [B, H], weight_ih [3H, I], weight_hh [3H, H], biases [3H] -> hy [B, H]."""
    return gru_pointwise(F.linear(input, weight_ih, bias_ih), F.linear(hx, weight_hh, bias_hh), hx)
