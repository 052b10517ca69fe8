"""The cpu backend: fused C++ kernels for CPU tensors (csrc/cpu/, built as s2s_fast._cpu), forward and backward,
float32 and float64: additive attention (one query per row or many), for which torch has no fused kernel, and the
LSTM and GRU layers, whose backward is faster than torch's CPU RNN backward (one matrix product each for the input
and weight gradients over all steps).

Available on CPU tensors when the library was built (every install with a C++ compiler builds it). Auto tries it
first on a CPU; the ops it does not implement (the cells) and LSTM projections go to the aten backend. See s2s_fast.backends for the
protocol (``unavailable_reason``, ``OPS``, ``LIMITS``).
"""

from __future__ import annotations

import torch

from . import additive_attention, gru_layer, lstm_layer
from .compiled import MISSING_REASON, extension_module

OPS = {
    "additive_attention": additive_attention.additive_attention,
    "lstm_layer": lstm_layer.lstm_layer,
    "gru_layer": gru_layer.gru_layer,
}
LIMITS = {
    "additive_attention": additive_attention.additive_attention_limit,
    "lstm_layer": lstm_layer.lstm_layer_limit,
    "gru_layer": gru_layer.gru_layer_limit,
}

if extension_module is not None:
    additive_attention.register()
    lstm_layer.register()
    gru_layer.register()


def unavailable_reason(device: torch.device) -> str | None:
    """None for CPU tensors when the library is built; otherwise why not (and how to build it)."""
    if MISSING_REASON is not None:
        return MISSING_REASON
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not {device.type}"
    return None
