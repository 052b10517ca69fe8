"""Fused additive attention on the cpu backend (kernels in csrc/cpu/additive_attention_kernels.h, operators bound in
csrc/cpu/additive_attention.cpp).

The forward computes scores, masked softmax and context without forming the [B, Tq, Tk, A] tanh tensor; what it
keeps for the backward is its inputs and the [B, Tq, Tk] weights. The backward recomputes tanh. Both are vectorised
(at::vec, the widest instruction set the CPU and torch run) and run on torch's CPU threads; grad_v is summed over
batch rows in a fixed order, so every gradient has the same bits on every run.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .compiled import dtype_limit


def additive_attention_fwd(query_proj, key_proj, v, values, mask):
    """query_proj [B, Tq, A] -> (context [B, Tq, Dv], weights [B, Tq, Tk])."""
    return torch.ops.s2s_fast.cpu_additive_attention_fwd(query_proj, key_proj, v, values, mask)


def additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values, weights):
    """-> (grad_query_proj [B, Tq, A], grad_key_proj [B, Tk, A], grad_v [A], grad_values [B, Tk, Dv])."""
    return torch.ops.s2s_fast.cpu_additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values,
                                                         weights)


def _forward_fake(query_proj, key_proj, v, values, mask):
    batch, queries = query_proj.shape[:2]
    keys, value_size = values.shape[1:]
    return values.new_empty(batch, queries, value_size), values.new_empty(batch, queries, keys)


def _backward_fake(grad_context, grad_weights, query_proj, key_proj, v, values, weights):
    return (query_proj.new_empty(query_proj.shape), key_proj.new_empty(key_proj.shape), v.new_empty(v.shape),
            values.new_empty(values.shape))


def _setup_context(ctx, inputs, output):
    save_inputs(ctx, inputs, output[1])


def _backward(ctx, grad_context, grad_weights):
    inputs, (weights,) = saved_inputs(ctx)
    query_proj, key_proj, v, values, _mask = inputs
    grads = additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values, weights)
    return tuple(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad[:4])) + (None,)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cpu_additive_attention_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cpu_additive_attention_fwd",
                                    with_double_backward("additive_attention", 5, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cpu_additive_attention_bwd", _backward_fake)


def additive_attention(query_proj, key_proj, v, values, mask=None):
    """Additive attention on CPU tensors; see s2s_fast.functional.additive_attention.

    Args:
        query_proj: [B, Tq, A]. key_proj: [B, Tk, A]. v: [A]. values: [B, Tk, Dv].
        mask: bool [B, Tk], True = attend, or None.

    Returns:
        (context [B, Tq, Dv], weights [B, Tq, Tk]).
    """
    return additive_attention_fwd(query_proj, key_proj, v, values, mask)


def additive_attention_limit(query_proj, key_proj, v, values, mask=None) -> str | None:
    """None when additive_attention serves the call, else the limit it hits."""
    return dtype_limit(values)
