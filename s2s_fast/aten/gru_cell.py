"""GRU cell on the aten backend: torch.gru_cell, the op behind torch.nn.GRUCell (fused on a GPU)."""

from __future__ import annotations

import torch


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step through torch.gru_cell; see s2s_fast.functional.gru_cell.

    Args:
        input: [B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.

    Returns:
        hy [B, H].
    """
    return torch.gru_cell(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
