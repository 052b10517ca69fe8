"""Gradients through the reference's composition of an op, with their graph: what a fused backend's backward returns
under ``create_graph=True`` (autograd runs a backward with grad mode on only then), so that second-order gradients
(a gradient penalty, a Hessian-vector product) are right. The fused kernels' own backward is not differentiable; the
reference's ops are (their time loop too). It costs a second forward and backward, through the reference, of the op
alone, and only where a graph of the gradient was asked for.
"""

from __future__ import annotations

from typing import Callable

import torch


def gradients(op: str, inputs: tuple, grads: tuple) -> tuple:
    """The gradients of the reference ``op``'s outputs, weighted by ``grads`` (None: an output nobody differentiated),
    against each tensor of ``inputs`` (the op's arguments, as its forward took them) that requires one; None for the
    others. Built with create_graph, so that they can be differentiated again."""
    from . import OPS

    wanted = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor) and value.requires_grad]
    result: list = [None] * len(inputs)
    if not wanted:
        return tuple(result)
    # The op's own gradients: through an alias of each input, at which autograd stops. Taken against the inputs
    # themselves, they would add every path through the inputs' history too (a layer's hx depends on the weights
    # through the steps before), where the engine sums those steps' own gradients already. In the dtypes the forward
    # ran in, as the kernels' own backward does, whatever autocast surrounds the backward.
    with torch.enable_grad(), torch.autocast(inputs[wanted[0]].device.type, enabled=False):
        aliases = {i: inputs[i].view_as(inputs[i]) for i in wanted}
        outputs = OPS[op](*(aliases.get(i, value) for i, value in enumerate(inputs)))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(output, grad) for output, grad in zip(outputs, grads)
                 if grad is not None and isinstance(output, torch.Tensor) and output.requires_grad]
        if not pairs:
            return tuple(result)
        found = torch.autograd.grad([output for output, _ in pairs], [aliases[i] for i in wanted],
                                    [grad for _, grad in pairs], create_graph=True, allow_unused=True)
    for i, grad in zip(wanted, found):
        result[i] = grad
    return tuple(result)


def save_inputs(ctx, inputs: tuple, *kept: torch.Tensor | None) -> None:
    """Save a fused op's forward arguments ``inputs`` (for its backward under create_graph: with_double_backward) and the
    tensors ``kept`` its own backward reads; saved_inputs returns them."""
    ctx.input_constants = tuple(None if isinstance(value, torch.Tensor) else value for value in inputs)
    ctx.input_is_tensor = tuple(isinstance(value, torch.Tensor) for value in inputs)
    ctx.save_for_backward(*(value for value in inputs if isinstance(value, torch.Tensor)), *kept)


def saved_inputs(ctx) -> tuple[tuple, tuple]:
    """(the forward's arguments, the tensors kept) as save_inputs saved them."""
    saved = iter(ctx.saved_tensors)
    inputs = tuple(next(saved) if is_tensor else constant
                   for is_tensor, constant in zip(ctx.input_is_tensor, ctx.input_constants))
    return inputs, tuple(saved)


def with_double_backward(op: str, arity: int, backward: Callable) -> Callable:
    """A fused op's autograd formula: ``backward`` (its kernels', the forward's arguments saved by save_inputs) for a
    plain backward; under create_graph=True (a backward run with grad mode on) the gradients through the reference's
    composition of ``op`` (gradients: the kernels' backward is not itself differentiable) of the forward's first
    ``arity`` arguments, the reference op's own, and None for the rest (the kernels' options)."""

    def formula(ctx, *grads):
        if not torch.is_grad_enabled():
            return backward(ctx, *grads)
        inputs, _ = saved_inputs(ctx)
        return gradients(op, inputs[:arity], grads) + (None,) * (len(inputs) - arity)

    return formula
