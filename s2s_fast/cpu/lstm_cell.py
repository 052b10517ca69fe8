"""LSTM cell on the cpu backend: one step of the cpu LSTM layer (csrc/cpu/lstm_layer.cpp), forward and backward.

The step is the layer's at T = 1: the input and hidden products (through oneDNN where the cpu backend's products go
there, csrc/cpu/products.h), then one vectorised pass for the gates, c and h; the backward one pass back through the
gates and a product each for the input, hidden and weight gradients. Auto tries it first where those products run
through oneDNN and the step is large enough (s2s_fast.backends.CPU_ONEDNN_FROM_WORK, and
CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512 on a CPU without AVX-512: with the same library as torch.lstm_cell it only
matches it), and at inference while they run in bfloat16 (CPU_BF16_INFERENCE_PREFERS_CPU:
its packed weights are kept across calls, where torch.lstm_cell rounds them at each).
"""

from __future__ import annotations

from .compiled import dtype_limit
from .lstm_layer import lstm_layer


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One LSTM step on CPU tensors; see s2s_fast.functional.lstm_cell.

    Args:
        input: [B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.

    Returns:
        (hy [B, H], cy [B, H]).
    """
    _output, hy, cy = lstm_layer(input.unsqueeze(0), hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    return hy, cy


def lstm_cell_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> str | None:
    """None when lstm_cell serves the call: float32 and float64."""
    return dtype_limit(input)
