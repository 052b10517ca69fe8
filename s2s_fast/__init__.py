"""s2s_fast: fused LSTM/GRU and attention kernels for Seq2Seq models, with a pure-PyTorch reference path."""

from . import functional
from .backends import available_backends, get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = ["available_backends", "functional", "get_backend", "set_backend", "use_backend", "__version__"]
