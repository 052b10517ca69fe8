"""Reference GRU layer: one direction over a padded, time-major sequence with per-row lengths (see time_loop.py).

Input projections for all steps are one GEMM before the time loop; a backend cell passed as ``cell`` is called per
step instead. Per-step inputs come from ``unbind``, not ``x[t]``: the backward of ``x[t]`` writes a zero tensor of
``x``'s full size for every step (O(T^2) memory traffic), the backward of ``unbind`` is one ``stack``.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F

from .gru_cell import gru_pointwise
from .time_loop import per_step_weights, stack_outputs, time_loop, with_empty_rows, without_padding


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
              *, cell: Callable | None = None):
    """input [T, B, I], hx [B, H], lengths [B] int64 or None -> (output [T, B, H], hy [B, H])."""
    given = (hx,)
    input, (hx,) = without_padding(input, given, lengths)
    if cell is None:
        input_gates = F.linear(input, weight_ih, bias_ih).unbind(0)  # T x [B, 3H]

        def step(t, state):
            h = gru_pointwise(input_gates[t], F.linear(state[0], weight_hh, bias_hh), state[0])
            return h, (h,)
    else:
        inputs = input.unbind(0)
        weights = per_step_weights(input.shape[0], weight_ih, weight_hh, bias_ih, bias_hh)

        def step(t, state):
            h = cell(inputs[t], state[0], *weights[t])
            return h, (h,)

    outputs, final = time_loop(step, input.shape[0], (hx,), lengths, reverse)
    return (stack_outputs(outputs, input, hx.shape[1], hx, weight_ih, weight_hh, bias_ih, bias_hh),
            *with_empty_rows(final, given, lengths))
