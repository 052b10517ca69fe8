"""Drop-in modules: thin wrappers holding parameters and calling s2s_fast.functional."""

from .attention import AdditiveAttention, LuongAttention
from .cell import GRUCell, LSTMCell
from .dropout import Dropout
from .linear import Linear
from .rnn import GRU, LSTM

__all__ = ["AdditiveAttention", "Dropout", "GRU", "GRUCell", "LSTM", "LSTMCell", "Linear", "LuongAttention"]
