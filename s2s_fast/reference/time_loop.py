"""The time loop of the reference RNN layers: one direction over a padded, time-major sequence with per-row lengths.

Row b runs steps 0 .. lengths[b]-1 (forward) or lengths[b]-1 .. 0 (reverse); its output is zero past its end and
its final state is the state after its last valid step (the initial state when its length is 0). The LSTM and GRU
layers (lstm_layer.py, gru_layer.py) give it their step; a backend's cell runs in it for a layer the backend does not
fuse (see s2s_fast.backends).
"""

from __future__ import annotations

from typing import Callable

import torch


def time_loop(step: Callable, steps: int, state: tuple, lengths, reverse: bool):
    """Run ``step(t, state) -> (output [B, H], new_state)`` over ``steps`` steps, holding each row's state past its
    length (lengths [B] int64, or None for full rows); returns (the T outputs in time order, the final state)."""
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


def stack_outputs(outputs: list, like: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """T x [B, H] -> [T, B, H]; for T = 0, an empty [0, B, H] like ``like`` [0, B, I]."""
    if not outputs:
        return like.new_zeros(0, like.shape[1], hidden_size)
    return torch.stack(outputs)
