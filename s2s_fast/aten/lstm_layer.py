"""LSTM layer on the aten backend: torch's LSTM op (oneDNN/MKL on a CPU, cuDNN on a GPU), projections included."""

from __future__ import annotations

import torch

from .sequence import compile_limit, rnn_params, run_layer


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None):
    """One LSTM layer direction through torch's LSTM op; see s2s_fast.functional.lstm_layer.

    Args:
        input: [T, B, I]. hx: [B, H] ([B, P] with weight_hr). cx: [B, H]. weight_ih: [4H, I].
        weight_hh: [4H, H] ([4H, P] with weight_hr). bias_ih, bias_hh: [4H] or None.
        lengths: int64 [B] in [0, T] or None. reverse: run each row from its last valid step.
        weight_hr: [P, H] or None.

    Returns:
        (output [T, B, H or P], hy like hx, cy [B, H]).
    """
    params, has_biases = rnn_params(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    output, (hy, cy) = run_layer(torch._VF.lstm, input, (hx, cx), params, has_biases, lengths, reverse)
    return output, hy, cy


def lstm_layer_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
                     weight_hr=None) -> str | None:
    """None when lstm_layer serves the call: everywhere but under torch.compile."""
    return compile_limit()
