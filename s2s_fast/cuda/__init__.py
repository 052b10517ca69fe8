"""The cuda backend: hand-written CUDA C++ kernels (csrc/) bound to torch as the s2s_fast operators.

Available when the extension s2s_fast._C was built (a CUDA build of torch and nvcc at install time) and the
tensors are on a CUDA device; or, with ``S2S_FAST_CUDA_EMULATE`` set before import, on CPU tensors through the
emulation s2s_fast._C_emulated (see s2s_fast.cuda.compiled; auto never picks it for CPU tensors). See
s2s_fast.backends for the protocol (``unavailable_reason``, ``OPS``, ``LIMITS``).
The GRU layer runs the cuda GRU cell in the reference time loop (s2s_fast.backends does that for a backend without
``gru_layer``); ``dot_attention`` is left to the other backends.
"""

from __future__ import annotations

import functools

import torch

from . import additive_attention, gru_cell, lstm_cell, lstm_layer
from .compiled import MISSING_REASON, extension_module, wrong_device_reason

OPS = {
    "lstm_cell": lstm_cell.lstm_cell,
    "gru_cell": gru_cell.gru_cell,
    "lstm_layer": lstm_layer.lstm_layer,
    "additive_attention": additive_attention.additive_attention,
}
# The LSTM cell's two forward paths, each forced, for the benchmarks to time side by side (auto picks by batch); the
# attention's packed and scalar (default: as fast or faster on the H200, and more accurate) tanh for float16/bfloat16.
VARIANTS = {"lstm_cell": {"fused gates": (functools.partial(lstm_cell.lstm_cell, fused=True),
                                          lstm_cell.fused_gates_limit),
                          "cuBLAS gates": (functools.partial(lstm_cell.lstm_cell, fused=False), None)},
            "additive_attention": {
                "packed tanh": (functools.partial(additive_attention.additive_attention, packed_tanh=True), None),
                "scalar tanh": (functools.partial(additive_attention.additive_attention, packed_tanh=False), None)}}
LIMITS = {
    "lstm_cell": lstm_cell.lstm_cell_limit,
    "gru_cell": gru_cell.gru_cell_limit,
    "lstm_layer": lstm_layer.lstm_layer_limit,
    "additive_attention": additive_attention.additive_attention_limit,
}

if extension_module is not None:
    for _module in (lstm_cell, gru_cell, additive_attention, lstm_layer):
        _module.register()


def unavailable_reason(device: torch.device) -> str | None:
    """None for the kernels' device (CUDA, or the CPU under the emulation) when their library is built; otherwise why
    not and how to build it."""
    if MISSING_REASON is not None:
        return MISSING_REASON
    return wrong_device_reason(device)
