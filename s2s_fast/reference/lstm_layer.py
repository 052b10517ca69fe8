"""Reference LSTM layer: one direction over a padded, time-major sequence with per-row lengths (see time_loop.py).

Input projections for all steps are one GEMM before the time loop; a backend cell passed as ``cell`` is called per
step instead. Per-step inputs come from ``unbind``, not ``x[t]``: the backward of ``x[t]`` writes a zero tensor of
``x``'s full size for every step (O(T^2) memory traffic), the backward of ``unbind`` is one ``stack``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F

from .lstm_cell import lstm_pointwise
from .time_loop import per_step_weights, stack_outputs, time_loop, with_empty_rows, without_padding


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None, *, cell: Callable | None = None):
    """input [T, B, I], hx [B, H] ([B, P] with weight_hr [P, H]), cx [B, H], lengths [B] int64 or None
    -> (output [T, B, H or P], hy like hx, cy [B, H]); each step's h is projected by weight_hr when given."""
    given = (hx, cx)
    input, (hx, cx) = without_padding(input, given, lengths)
    if cell is None:
        input_gates = F.linear(input, weight_ih, bias_ih).unbind(0)  # T x [B, 4H]

        def cell_step(t, h, c):
            return lstm_pointwise(input_gates[t] + F.linear(h, weight_hh, bias_hh), c)
    else:
        inputs = input.unbind(0)
        weights = per_step_weights(input.shape[0], weight_ih, weight_hh, bias_ih, bias_hh)

        def cell_step(t, h, c):
            return cell(inputs[t], h, c, *weights[t])

    def step(t, state):
        h, c = cell_step(t, *state)
        if weight_hr is not None:
            h = F.linear(h, weight_hr)
        return h, (h, c)

    outputs, final = time_loop(step, input.shape[0], (hx, cx), lengths, reverse)
    return (stack_outputs(outputs, input, hx.shape[1], hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr),
            *with_empty_rows(final, given, lengths))
