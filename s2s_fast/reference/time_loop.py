"""The time loop of the reference RNN layers: one direction over a padded, time-major sequence with per-row lengths.

Row b runs steps 0 .. lengths[b]-1 (forward) or lengths[b]-1 .. 0 (reverse); its output is zero past its end and
its final state is the state after its last valid step (the initial state when its length is 0). The LSTM and GRU
layers (lstm_layer.py, gru_layer.py) give it their step; a backend's cell runs in it for a layer the backend does not
fuse (see s2s_fast.backends). They run on without_padding's input and states: what lies in a row's padding or in the
state of a row of length 0 reaches no output and no gradient.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import transforms


def without_padding(input, state: tuple, lengths) -> tuple:
    """(input, state) as a layer runs them: input [T, B, I] with each row's padded steps zero, and each state [B, *]
    zero for the rows of length 0 (with_empty_rows gives those rows their state as given back as their final one).
    A layer that runs every position through its input product and every row's state through h @ weight_hh^T would
    otherwise take whatever a caller leaves there (NaN, inf: torch.empty's garbage) into the weights' gradients as
    0 * NaN, though no output depends on it. lengths None: as given."""
    if lengths is None:
        return input, state
    padded = torch.arange(input.shape[0], device=input.device).unsqueeze(1) >= lengths.unsqueeze(0)  # [T, B]
    empty = (lengths == 0).unsqueeze(1)
    return input.masked_fill(padded.unsqueeze(2), 0), tuple(s.masked_fill(empty, 0) for s in state)


def with_empty_rows(final: tuple, state: tuple, lengths) -> tuple:
    """The final states ``final`` of a layer run from without_padding's states, with each row of length 0 given its
    initial state ``state`` as the caller gave it (its gradient flowing there)."""
    if lengths is None:
        return final
    empty = (lengths == 0).unsqueeze(1)
    return tuple(torch.where(empty, given, value) for given, value in zip(state, final))


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


class _Float32GradientRoot(torch.autograd.Function):
    """weight -> a float32 carrier of its shape (an expanded zero: no memory); the carrier's gradient, summed in
    float32 along the chain of _StepAlias nodes, becomes the weight's, cast once."""

    @staticmethod
    def forward(weight):
        return weight.new_zeros((), dtype=torch.float32).expand(weight.shape)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        ctx.dtype = inputs[0].dtype

    @staticmethod
    def backward(ctx, grad):
        return None if grad is None else grad.to(ctx.dtype)


class _StepAlias(torch.autograd.Function):
    """(weight, carrier) -> (the weight for one step, the next carrier): the step's gradient of the weight goes into the
    carrier's float32 sum, not to the weight, so that one step at a time is held (autograd keeps every output's
    gradient of a node until the last arrives)."""

    @staticmethod
    def forward(weight, carrier):
        return weight.view_as(weight), carrier.view_as(carrier)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_alias, grad_carrier):
        if grad_alias is None:
            return None, grad_carrier
        return None, grad_alias.float() if grad_carrier is None else grad_carrier + grad_alias


def per_step_weights(steps: int, *weights) -> list[tuple]:
    """``weights`` (tensors or None) for each of ``steps`` steps of a backend's cell in the time loop: in float16 and
    bfloat16 their gradients are summed over the steps in float32, where autograd would add the steps' gradients one
    by one in the weights' dtype. A layer's own input projection is one product over all steps, so its input weight
    and bias gradients round once; added step by step in bfloat16 they came out 2-4x the reference's error (the
    first GPU run's cuda GRU layer; at T=64 on a CPU with the reference's cells too). Each step's alias passes its
    gradient down a chain of float32 sums, one step held at a time. Under torch.func's transforms and forward-mode AD
    (where those autograd.Functions would need rules of their own) every step takes the weights themselves."""
    present = [w for w in weights if w is not None]
    if steps == 0 or not present or present[0].dtype.itemsize >= 4 or not torch.is_grad_enabled() or \
            not any(w.requires_grad for w in present) or transforms.active(present):
        return [weights] * steps
    carriers = {id(w): _Float32GradientRoot.apply(w) for w in present if w.requires_grad}
    per_step = []
    for _ in range(steps):
        aliases = []
        for w in weights:
            if w is None or id(w) not in carriers:
                aliases.append(w)
                continue
            alias, carriers[id(w)] = _StepAlias.apply(w, carriers[id(w)])
            aliases.append(alias)
        per_step.append(tuple(aliases))
    return per_step


def exact_zero(*tensors):
    """An exact 0 that keeps ``tensors`` (None skipped) in autograd's graph: an empty slice's sum. Added to an empty
    output, it keeps that output in the graph as torch.nn's and the other backends' are (zero gradients for what it
    came from), where a bare new_zeros would have none."""
    return sum(t.reshape(-1)[:0].sum() for t in tensors if t is not None)


def stack_outputs(outputs: list, like: torch.Tensor, hidden_size: int, *sources) -> torch.Tensor:
    """T x [B, H] -> [T, B, H]; for T = 0, an empty [0, B, H] like ``like`` [0, B, I], in the graph of ``like`` and
    ``sources`` (the layer's state and weights)."""
    if not outputs:
        return like.new_zeros(0, like.shape[1], hidden_size) + exact_zero(like, *sources)
    return torch.stack(outputs)
