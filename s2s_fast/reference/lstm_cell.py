"""Reference LSTM cell in pure PyTorch, torch.nn.LSTMCell's gate order (i, f, g, o) and formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lstm_pointwise(gates: torch.Tensor, cx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cell's pointwise part. gates [B, 4H] (pre-activation, i f g o), cx [B, H] -> (hy [B, H], cy [B, H])."""
    in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
    cy = torch.sigmoid(forget_gate) * cx + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
    hy = torch.sigmoid(out_gate) * torch.tanh(cy)
    return hy, cy


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step. input [B, I], hx/cx [B, H], weight_ih [4H, I], weight_hh [4H, H], biases [4H] -> (hy, cy)."""
    gates = F.linear(input, weight_ih, bias_ih) + F.linear(hx, weight_hh, bias_hh)
    return lstm_pointwise(gates, cx)
