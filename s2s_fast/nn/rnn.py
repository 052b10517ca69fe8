"""Drop-in LSTM and GRU: torch.nn.LSTM / torch.nn.GRU's constructor, parameters, state_dict keys and forward
semantics, computed layer by layer through s2s_fast.functional so that a fused backend serves each layer.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import functional as F
from ..functional import InputError, InputTypeError
from ..backends import check_backend_name
from .torchscript import NotScriptable


def _initial_state(module, hx, batch: int, like: torch.Tensor, batched: bool, is_lstm: bool):
    """Validate and normalise ``hx`` to [L*D, B, H] tensors (a pair for LSTM); zeros when ``hx`` is None."""
    kind = type(module).__name__
    layers = module.num_layers * (2 if module.bidirectional else 1)
    expected_cell = (layers, batch, module.hidden_size)
    expected_hidden = (layers, batch, module.proj_size or module.hidden_size)
    if hx is None:
        return (like.new_zeros(expected_hidden), like.new_zeros(expected_cell)) if is_lstm else \
            like.new_zeros(expected_hidden)
    states = hx
    if is_lstm:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise InputTypeError(f"{kind}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
    else:
        states = (hx,)
    normalised = []
    for name, state, expected in zip(("h_0", "c_0"), states, (expected_hidden, expected_cell)):
        if not isinstance(state, torch.Tensor):
            raise InputTypeError(f"{kind}: {name} must be a tensor, got {type(state).__name__}")
        wanted_dim = 3 if batched else 2
        if state.dim() != wanted_dim:
            raise InputError(f"{kind}: for {'batched 3' if batched else 'unbatched 2'}-d input, {name} must be "
                             f"{wanted_dim}-d, got {state.dim()}-d")
        state = state if batched else state.unsqueeze(1)
        if tuple(state.shape) != expected:
            shown = expected if batched else (expected[0], expected[2])
            got = state.shape if batched else state.squeeze(1).shape
            raise InputError(f"{kind}: expected {name} of shape {list(shown)}, got {list(got)}")
        normalised.append(state)
    return tuple(normalised) if is_lstm else normalised[0]


def layer_weights(module, layer: int, direction: int) -> tuple:
    suffix = f"l{layer}" + ("_reverse" if direction else "")
    weight_ih = getattr(module, f"weight_ih_{suffix}")
    weight_hh = getattr(module, f"weight_hh_{suffix}")
    if module.bias:
        return weight_ih, weight_hh, getattr(module, f"bias_ih_{suffix}"), getattr(module, f"bias_hh_{suffix}")
    return weight_ih, weight_hh, None, None


def _run_layers(module, input: torch.Tensor, lengths, state, is_lstm: bool):
    """input [T, B, I] time-major; state [L*D, B, H] (pair for LSTM) -> (output [T, B, D*H], final state)."""
    directions = 2 if module.bidirectional else 1
    h_0, c_0 = state if is_lstm else (state, None)
    final_h, final_c = [], []
    layer_input = input
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = layer_weights(module, layer, direction)
            if is_lstm:
                weight_hr = getattr(module, f"weight_hr_l{layer}{'_reverse' if direction else ''}", None)
                output, h, c = F.lstm_layer(layer_input, h_0[index], c_0[index], *weights, lengths=lengths,
                                            reverse=bool(direction), weight_hr=weight_hr, backend=module.backend)
                final_c.append(c)
            else:
                output, h = F.gru_layer(layer_input, h_0[index], *weights, lengths=lengths,
                                        reverse=bool(direction), backend=module.backend)
            final_h.append(h)
            outputs.append(output)
        layer_input = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        if module.dropout and module.training and layer < module.num_layers - 1:
            layer_input = F.dropout(layer_input, module.dropout, training=True, backend=module.backend)
    final = torch.stack(final_h)
    return layer_input, ((final, torch.stack(final_c)) if is_lstm else final)


class _RNNMixin(NotScriptable):
    """The shared forward of LSTM and GRU; mixed into subclasses of torch.nn.LSTM / torch.nn.GRU."""

    _is_lstm: bool

    def _init_backend(self, backend):
        if self.proj_size and not self._is_lstm:
            raise ValueError("proj_size argument is only supported for LSTM, not GRU")
        self.backend = None if backend is None else check_backend_name(backend)

    def forward_padded(self, input: torch.Tensor, lengths: torch.Tensor | None = None, hx=None):
        """Run on a padded batch with per-row lengths, without packing.

        Args:
            input: [B, T, I] if batch_first else [T, B, I]. lengths: integer [B] in [0, T] or None (all T).
            hx: as in forward.

        Returns:
            (output with input's layout and zeros past each row's end, h_n [L*D, B, H] (H is proj_size when
            that is nonzero), and for LSTM c_n [L*D, B, H]).
        """
        if input.dim() != 3:
            raise InputError(f"{type(self).__name__}.forward_padded: input must be 3-d, got {input.dim()}-d")
        time_major = input.transpose(0, 1) if self.batch_first else input
        self._check_input_size(time_major)
        state = _initial_state(self, hx, time_major.shape[1], time_major, True, self._is_lstm)
        output, final = _run_layers(self, time_major, lengths, state, self._is_lstm)
        return (output.transpose(0, 1) if self.batch_first else output), final

    def _check_input_size(self, input: torch.Tensor) -> None:
        if input.shape[-1] != self.input_size:
            raise InputError(f"{type(self).__name__}: input.size(-1) must be input_size = {self.input_size}, "
                             f"got {input.shape[-1]}")

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            padded, lengths = pad_packed_sequence(input)  # [T, B, I], rows in the caller's order
            self._check_input_size(padded)
            state = _initial_state(self, hx, padded.shape[1], padded, True, self._is_lstm)
            output, final = _run_layers(self, padded, lengths, state, self._is_lstm)
            return _pack_like(output, lengths, input), final
        if not isinstance(input, torch.Tensor):
            raise InputTypeError(f"{type(self).__name__}: input must be a tensor or PackedSequence, "
                            f"got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise InputError(f"{type(self).__name__}: expected input of 2 (unbatched) or 3 (batched) dimensions, "
                             f"got {input.dim()}")
        batched = input.dim() == 3
        time_major = (input.transpose(0, 1) if self.batch_first else input) if batched else input.unsqueeze(1)
        self._check_input_size(time_major)
        if time_major.shape[0] == 0:  # as torch.nn refuses it; forward_padded takes T = 0 with rows of length 0
            raise InputError(f"{type(self).__name__}: expected sequence length to be larger than 0, got input of "
                             f"shape {list(input.shape)}")
        state = _initial_state(self, hx, time_major.shape[1], time_major, batched, self._is_lstm)
        output, final = _run_layers(self, time_major, None, state, self._is_lstm)
        if not batched:
            final = tuple(s.squeeze(1) for s in final) if self._is_lstm else final.squeeze(1)
            return output.squeeze(1), final
        return (output.transpose(0, 1) if self.batch_first else output), final


def _pack_like(output: torch.Tensor, lengths: torch.Tensor, packed: PackedSequence) -> PackedSequence:
    """Pack a padded time-major output in the same layout (batch sizes and orders) as the packed input."""
    if packed.sorted_indices is not None:
        output = output.index_select(1, packed.sorted_indices)
        lengths = lengths[packed.sorted_indices.cpu()]
    data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


# Built on torch.nn.RNNBase (as torch.nn.LSTM and GRU are) for the same parameters, initialisation and state_dict
# keys, but not on LSTM/GRU themselves: torch.compile refuses to trace instances of those classes.
class LSTM(_RNNMixin, torch.nn.RNNBase):
    """torch.nn.LSTM with the same arguments, parameters and forward (proj_size included), plus ``backend=``."""

    _is_lstm = True
    # torch.nn.LSTM's own methods for its (h, c) pair, which user code (and torch's RNN utilities) call; RNNBase's,
    # inherited otherwise, take one tensor.
    get_expected_cell_size = torch.nn.LSTM.get_expected_cell_size
    check_forward_args = torch.nn.LSTM.check_forward_args
    permute_hidden = torch.nn.LSTM.permute_hidden

    def __init__(self, *args, backend: str | None = None, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        self._init_backend(backend)


class GRU(_RNNMixin, torch.nn.RNNBase):
    """torch.nn.GRU with the same arguments, parameters and forward, plus ``backend=``."""

    _is_lstm = False

    def __init__(self, *args, backend: str | None = None, **kwargs):
        if "proj_size" in kwargs:  # as torch.nn.GRU, for any value (RNNBase's checks would speak of an LSTM's)
            raise ValueError("proj_size argument is only supported for LSTM, not GRU")
        super().__init__("GRU", *args, **kwargs)
        self._init_backend(backend)
