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


class _PerStepAliases(torch.autograd.Function):
    """The same tensors once per step, their gradients summed over all steps at once, in float32."""

    @staticmethod
    def forward(ctx, steps: int, *tensors):
        ctx.count, ctx.dtypes = len(tensors), [t.dtype for t in tensors]
        return tuple(t.view_as(t) for _ in range(steps) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        sums = []
        for index, dtype in enumerate(ctx.dtypes):
            total = None
            for grad in grads[index::ctx.count]:
                if grad is not None:
                    total = grad.float() if total is None else total.add_(grad)
            sums.append(None if total is None else total.to(dtype))
        return (None, *sums)


def per_step_weights(steps: int, *weights) -> list[tuple]:
    """``weights`` (tensors or None) for each of ``steps`` steps of a backend's cell in the time loop: in float16 and
    bfloat16 their gradients are summed over the steps in float32, where autograd would add the steps' gradients one
    by one in the weights' dtype. A layer's own input projection is one product over all steps, so its input weight
    and bias gradients round once; added step by step in bfloat16 they came out 2-4x the reference's error (the
    first GPU run's cuda GRU layer; at T=64 on a CPU with the reference's cells too)."""
    present = [w for w in weights if w is not None]
    if steps == 0 or not present or present[0].dtype.itemsize >= 4 or not torch.is_grad_enabled() or \
            not any(w.requires_grad for w in present):
        return [weights] * steps
    aliases = iter(_PerStepAliases.apply(steps, *present))
    return [tuple(None if w is None else next(aliases) for w in weights) for _ in range(steps)]


def stack_outputs(outputs: list, like: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """T x [B, H] -> [T, B, H]; for T = 0, an empty [0, B, H] like ``like`` [0, B, I]."""
    if not outputs:
        return like.new_zeros(0, like.shape[1], hidden_size)
    return torch.stack(outputs)
