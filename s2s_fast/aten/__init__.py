"""The aten backend: torch's own RNN kernels behind s2s_fast's layer and cell ops (oneDNN/MKL on a CPU, cuDNN on a
GPU), so that a drop-in module is never slower than torch.nn.

lstm_layer and gru_layer run one direction of one layer through torch's RNN op (torch._VF.lstm / gru), per-row
lengths in torch.nn's padded form (see sequence.py); lstm_cell and gru_cell run torch.lstm_cell / torch.gru_cell
(linear, as on every backend without its own, is torch's: s2s_fast.backends).
Every floating dtype torch serves, LSTM projections (weight_hr) included, on CPU and CUDA tensors; under
torch.compile the layers are left to the reference, which traces (see sequence.compile_limit). Auto prefers it to the
reference for CPU tensors; for CUDA tensors only where s2s_fast.backends.CUDNN_FASTER says cuDNN was measured faster.
Torch's kernels run under torch's own switches: in float32 on a GPU the layers take cuDNN's TF32 setting
(``torch.backends.cudnn.allow_tf32``, on by default), as torch.nn.LSTM does, where the other backends follow torch's
matmul setting (off by default); turn cuDNN's off for IEEE float32 (the test suite does).
See s2s_fast.backends for the protocol (``unavailable_reason``, ``OPS``, ``LIMITS``).
"""

from __future__ import annotations

import torch

from .gru_cell import gru_cell
from .gru_layer import gru_layer, gru_layer_limit
from .lstm_cell import lstm_cell
from .lstm_layer import lstm_layer, lstm_layer_limit

OPS = {
    "lstm_cell": lstm_cell,
    "gru_cell": gru_cell,
    "lstm_layer": lstm_layer,
    "gru_layer": gru_layer,
}
LIMITS = {
    "lstm_layer": lstm_layer_limit,
    "gru_layer": gru_layer_limit,
}

_DEVICE_TYPES = ("cpu", "cuda")


def unavailable_reason(device: torch.device) -> str | None:
    if device.type in _DEVICE_TYPES:
        return None
    return f"the aten backend runs on CPU and CUDA tensors, not {device.type}"
