"""GRU cell on the cpu backend: one step of the cpu GRU layer (csrc/cpu/gru_layer.cpp), forward and backward.

As lstm_cell.py: the layer at T = 1, its products through the cpu backend's library; auto tries it first where that
is oneDNN and the step is large enough (s2s_fast.backends.CPU_ONEDNN_FROM_WORK, or its table for CPUs without
AVX-512) and at inference while its products run in bfloat16
(CPU_BF16_INFERENCE_PREFERS_CPU).
"""

from __future__ import annotations

from .compiled import dtype_limit
from .gru_layer import gru_layer


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step on CPU tensors; see s2s_fast.functional.gru_cell.

    Args:
        input: [B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.

    Returns:
        hy [B, H].
    """
    _output, hy = gru_layer(input.unsqueeze(0), hx, weight_ih, weight_hh, bias_ih, bias_hh)
    return hy


def gru_cell_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> str | None:
    """None when gru_cell serves the call: float32 and float64."""
    return dtype_limit(input)
