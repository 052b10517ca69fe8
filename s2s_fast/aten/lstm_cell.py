"""LSTM cell on the aten backend: torch.lstm_cell, the op behind torch.nn.LSTMCell (fused on a GPU)."""

from __future__ import annotations

import torch


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step through torch.lstm_cell; see s2s_fast.functional.lstm_cell.

    Args:
        input: [B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.

    Returns:
        (hy [B, H], cy [B, H]).
    """
    return torch.lstm_cell(input, (hx, cx), weight_ih, weight_hh, bias_ih, bias_hh)
