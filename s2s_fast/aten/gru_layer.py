"""GRU layer on the aten backend: torch's GRU op (oneDNN/MKL on a CPU, cuDNN on a GPU)."""

from __future__ import annotations

import torch

from .sequence import compile_limit, rnn_params, run_layer


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False):
    """One GRU layer direction through torch's GRU op; see s2s_fast.functional.gru_layer.

    Args:
        input: [T, B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.
        lengths: int64 [B] in [0, T] or None. reverse: run each row from its last valid step.

    Returns:
        (output [T, B, H], hy [B, H]).
    """
    params, has_biases = rnn_params(weight_ih, weight_hh, bias_ih, bias_hh)
    output, (hy,) = run_layer(torch._VF.gru, input, (hx,), params, has_biases, lengths, reverse)
    return output, hy


def gru_layer_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None,
                    reverse=False) -> str | None:
    """None when gru_layer serves the call: everywhere but under torch.compile."""
    return compile_limit()
