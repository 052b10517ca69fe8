"""The reference backend: pure PyTorch on any device, the ground truth of tests and baseline of benchmarks."""

from __future__ import annotations

import torch

from .additive_attention import additive_attention
from .beam_candidates import beam_candidates
from .dot_attention import dot_attention
from .dropout import dropout
from .gru_attention_decoder import gru_attention_decoder
from .gru_cell import gru_cell
from .gru_layer import gru_layer
from .linear import linear
from .log_softmax_max import log_softmax_max
from .lstm_attention_decoder import lstm_attention_decoder
from .lstm_cell import lstm_cell
from .lstm_layer import lstm_layer

OPS = {
    "lstm_cell": lstm_cell,
    "gru_cell": gru_cell,
    "lstm_layer": lstm_layer,
    "gru_layer": gru_layer,
    "additive_attention": additive_attention,
    "dot_attention": dot_attention,
    "linear": linear,
    "dropout": dropout,
    "log_softmax_max": log_softmax_max,
    "beam_candidates": beam_candidates,
    "lstm_attention_decoder": lstm_attention_decoder,
    "gru_attention_decoder": gru_attention_decoder,
}
LIMITS: dict = {}


def unavailable_reason(device: torch.device) -> str | None:
    return None
