"""The Triton backend: fused kernels for CUDA tensors, or CPU tensors through the Triton interpreter.

Set ``TRITON_INTERPRET=1`` before this package is imported to run the kernels on the CPU (slow; that is how CI tests
them). Every op serves float16, bfloat16 and float32 at every size, tiled with masks, up to 32-bit offsets inside one
batch row (attention) or one time step (RNN ops). The per-op checks in ``LIMITS`` refuse float64, empty tensors,
sizes past those offsets, and bfloat16 for the RNN ops on the CPU, whose dot products the interpreter gets wrong:
auto then falls back to the reference, an explicit request raises.
"""

from __future__ import annotations

import functools

import torch

from . import additive_attention, gru_cell, gru_layer, lstm_cell, lstm_layer
from . import utils
from .utils import interpreting

OPS = {
    "additive_attention": additive_attention.additive_attention,
    "lstm_cell": lstm_cell.lstm_cell,
    "gru_cell": gru_cell.gru_cell,
    "lstm_layer": lstm_layer.lstm_layer,
    "gru_layer": gru_layer.gru_layer,
}
# The layers' schedules, each forced, for the benchmarks to time side by side (auto picks one per size with
# utils.spread_by_default on a GPU, else utils.persistent_schedule, and whether the per-step one replays a graph with
# step_graphs.replay_by_default).
VARIANTS = {
    op: {"persistent": (functools.partial(layer, persistent=True), None),
         "per step": (functools.partial(layer, persistent=False, graph=False), None),
         "per step + graph": (functools.partial(layer, persistent=False, graph=True), None),
         "persistent spread": (functools.partial(layer, spread=True), utils.spread_limit)}
    for op, layer in (("lstm_layer", lstm_layer.lstm_layer), ("gru_layer", gru_layer.gru_layer))
}
LIMITS = {
    "additive_attention": additive_attention.additive_attention_limit,
    "lstm_cell": lstm_cell.lstm_cell_limit,
    "gru_cell": gru_cell.gru_cell_limit,
    "lstm_layer": lstm_layer.lstm_layer_limit,
    "gru_layer": gru_layer.gru_layer_limit,
}


def unavailable_reason(device: torch.device) -> str | None:
    """None when the kernels can run on tensors of ``device``, else why not and what to do."""
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreting():
        return None
    return (f"Triton kernels run on CUDA devices, not {device.type}: use a CUDA device, or set TRITON_INTERPRET=1 "
            "before s2s_fast.triton is imported to run them on the CPU through the (slow) Triton interpreter")
