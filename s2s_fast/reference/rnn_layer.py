"""Reference LSTM and GRU layers: one direction over a padded, time-major sequence with per-row lengths.

Row b runs steps 0 .. lengths[b]-1 (forward) or lengths[b]-1 .. 0 (reverse); its output is zero past its end and
its final state is the state after its last valid step (the initial state when its length is 0). Input projections
for all steps are one GEMM before the time loop; a backend cell passed as ``cell`` is called per step instead.
Per-step inputs come from ``unbind``, not ``x[t]``: the backward of ``x[t]`` writes a zero tensor of ``x``'s full
size for every step (O(T^2) memory traffic), the backward of ``unbind`` is one ``stack``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .gru_cell import gru_pointwise
from .lstm_cell import lstm_pointwise


def _time_loop(step: Callable, steps: int, state: tuple, lengths, reverse: bool):
    """Run ``step(t, state) -> (output, new_state)`` over time, holding each row's state past its length."""
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    outputs = [None] * steps
    for t in order:
        output, new_state = step(t, state)
        if lengths is None:
            state = new_state
        else:
            valid = (lengths > t).unsqueeze(1)  # [B, 1]
            state = tuple(torch.where(valid, new, old) for new, old in zip(new_state, state))
            output = torch.where(valid, output, torch.zeros_like(output))
        outputs[t] = output
    return outputs, state


def _stack(outputs: list, like: torch.Tensor, hidden_size: int) -> torch.Tensor:
    if not outputs:
        return like.new_zeros(0, like.shape[1], hidden_size)
    return torch.stack(outputs)


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None, *, cell: Callable | None = None):
    """input [T, B, I], hx [B, H] ([B, P] with weight_hr [P, H]), cx [B, H], lengths [B] int64 or None
    -> (output [T, B, H or P], hy like hx, cy [B, H]); each step's h is projected by weight_hr when given."""
    if cell is None:
        input_gates = F.linear(input, weight_ih, bias_ih).unbind(0)  # T x [B, 4H]

        def cell_step(t, h, c):
            return lstm_pointwise(input_gates[t] + F.linear(h, weight_hh, bias_hh), c)
    else:
        inputs = input.unbind(0)

        def cell_step(t, h, c):
            return cell(inputs[t], h, c, weight_ih, weight_hh, bias_ih, bias_hh)

    def step(t, state):
        h, c = cell_step(t, *state)
        if weight_hr is not None:
            h = F.linear(h, weight_hr)
        return h, (h, c)

    outputs, (hy, cy) = _time_loop(step, input.shape[0], (hx, cx), lengths, reverse)
    return _stack(outputs, input, hx.shape[1]), hy, cy


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
              *, cell: Callable | None = None):
    """input [T, B, I], hx [B, H], lengths [B] int64 or None -> (output [T, B, H], hy [B, H])."""
    if cell is None:
        input_gates = F.linear(input, weight_ih, bias_ih).unbind(0)  # T x [B, 3H]

        def step(t, state):
            h = gru_pointwise(input_gates[t], F.linear(state[0], weight_hh, bias_hh), state[0])
            return h, (h,)
    else:
        inputs = input.unbind(0)

        def step(t, state):
            h = cell(inputs[t], state[0], weight_ih, weight_hh, bias_ih, bias_hh)
            return h, (h,)

    outputs, (hy,) = _time_loop(step, input.shape[0], (hx,), lengths, reverse)
    return _stack(outputs, input, hx.shape[1]), hy
