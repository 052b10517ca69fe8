"""One direction of one RNN layer through torch's RNN ops, shared by lstm_layer and gru_layer.

Full-length rows run in torch.nn's padded form. Otherwise torch's RNN ops run a packed sequence: at step t the first batch_sizes[t] rows of a batch sorted by length, their
inputs stacked step after step. Per-row lengths and the reverse direction are both a choice of which padded
position (time, row) feeds each packed position: step t of row b reads time t, or lengths[b] - 1 - t in reverse.
Rows of length 0 never enter the packed sequence: their output is zero and their final state the initial one.
"""

from __future__ import annotations

from typing import Callable

import torch


def needs_grad(*tensors) -> bool:
    """Whether autograd will record this call (cuDNN then keeps what its backward needs)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rnn_params(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr=None) -> tuple[list, bool]:
    """torch's flat weight list for one layer direction and whether it has biases (a missing one of the two is
    zero)."""
    params = [weight_ih, weight_hh]
    has_biases = bias_ih is not None or bias_hh is not None
    if has_biases:
        params += [bias_ih if bias_ih is not None else torch.zeros_like(bias_hh),
                   bias_hh if bias_hh is not None else torch.zeros_like(bias_ih)]
    if weight_hr is not None:
        params.append(weight_hr)
    return params, has_biases


def _packed_positions(lengths: torch.Tensor, reverse: bool):
    """(batch_sizes [S] int64 on the CPU, time [N], row [N] of each packed position, the rows of nonzero length in
    packed order [B']) for lengths [B]; N = sum(lengths), S = max(lengths)."""
    sorted_lengths, order = lengths.cpu().sort(descending=True, stable=True)
    live = int((sorted_lengths > 0).sum())
    sorted_lengths = sorted_lengths[:live]
    steps = int(sorted_lengths[0]) if live else 0
    valid = torch.arange(steps).unsqueeze(1) < sorted_lengths.unsqueeze(0)  # [S, B']
    step, slot = valid.nonzero(as_tuple=True)  # step-major: the packed order
    time = sorted_lengths[slot] - 1 - step if reverse else step
    return valid.sum(1), time, order[slot], order[:live]


def _state_arg(state: tuple):
    """torch's RNN ops take an LSTM's state as a list (h, c), a GRU's as one tensor; each [1, B, *]."""
    return list(state) if len(state) == 2 else state[0]


def run_layer(rnn: Callable, input: torch.Tensor, state: tuple, params: list, has_biases: bool, lengths,
              reverse: bool) -> tuple[torch.Tensor, tuple]:
    """Run torch's RNN op ``rnn`` (torch._VF.lstm or gru) over input [T, B, I] from ``state`` ((hx, cx) or (hx,),
    [B, *] each): the padded form when every row runs all T steps (torch.nn's path, oneDNN on a CPU), else a packed
    sequence.

    Returns (output [T, B, D] zero past each row's end, final states [B, *] each).
    """
    steps, batch = input.shape[:2]
    out_size = state[0].shape[1]
    train = needs_grad(input, *state, *params)
    full = lengths is None or (steps > 0 and bool((lengths == steps).all()))
    if steps == 0 or batch == 0 or (not full and not bool((lengths > 0).any())):
        return input.new_zeros(steps, batch, out_size), state
    if full:
        output, *final = rnn(input.flip(0) if reverse else input, _state_arg(tuple(s.unsqueeze(0) for s in state)),
                             params, has_biases, 1, 0.0, train, False, False)
        return (output.flip(0) if reverse else output), tuple(f.squeeze(0) for f in final)
    batch_sizes, time, row, live_rows = _packed_positions(lengths, reverse)
    time, row, live_rows = (index.to(input.device) for index in (time, row, live_rows))
    live_state = _state_arg(tuple(s.index_select(0, live_rows).unsqueeze(0) for s in state))
    packed, *final = rnn(input[time, row], batch_sizes, live_state, params, has_biases, 1, 0.0, train, False)
    output = input.new_zeros(steps, batch, out_size).index_put((time, row), packed)
    return output, tuple(s.index_copy(0, live_rows, f.squeeze(0)) for s, f in zip(state, final))


def compile_limit() -> str | None:
    """torch.compile does not trace torch's RNN ops (Dynamo leaves torch.nn.LSTM and GRU out of its graphs too, and
    torch 2.13's AOT autograd fails on them when the input needs no gradient): the reference serves layers there."""
    if torch.compiler.is_compiling():
        return ("torch.compile does not trace torch's RNN ops (it leaves torch.nn.LSTM and GRU out of its graphs "
                "too); under it the reference backend serves layers, traced into the graph")
    return None
