"""Drop-in modules: thin wrappers holding parameters and calling s2s_fast.functional."""

from .attention import AdditiveAttention, LuongAttention
from .cell import GRUCell, LSTMCell
from .linear import Linear
from .rnn import GRU, LSTM

__all__ = ["AdditiveAttention", "GRU", "GRUCell", "LSTM", "LSTMCell", "Linear", "LuongAttention"]
