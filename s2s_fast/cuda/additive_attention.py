"""Fused additive attention on the cuda backend (kernels in csrc/additive_attention.cu, bound in csrc/ops.cpp).

The forward computes scores, masked softmax and context without forming the [B, Tq, Tk, A] tanh tensor, and keeps
the fp32 probabilities [B, Tq, Tk] for the backward, which recomputes tanh. The backward is two kernels that write
every gradient in the inputs' dtype (fp32 sums inside). With more than 32 keys, the backward's tiles of keys add into
grad_query atomically, so its last bits can vary from run to run; under ``torch.use_deterministic_algorithms(True)``
each tile writes a slab of its own ([Tk / 32, B, Tq, A] float32 scratch) and the last tile to finish adds them in a
fixed order. Every other gradient is deterministic either way.

float16 and bfloat16 take one scalar ``tanh.approx.f32`` per element (``packed_tanh=False``, the default), or two
tanh per packed ``tanh.approx.f16x2`` / ``bf16x2`` instruction where the loads are 16-byte ones (``packed_tanh=True``;
bf16x2 needs sm_90, older GPUs take two scalar ones). Both keep the error within twice that of the reference run in
the same precision (the tests' rule); the scalar one is the more accurate, and the first GPU run (H200, bfloat16,
2026-12-04, the bench's VARIANTS side by side) timed it as fast or faster at every size: at B=128, Tq=Tk=128, A=512
0.85 ms forward against 0.87 and 2.20 forward+backward against 2.22, at one query B=256 0.35 against 0.43 ms.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from . import compiled
from .compiled import dtype_limit


def additive_attention_fwd(query_proj, key_proj, v, values, mask, packed_tanh=True):
    """query_proj [B, Tq, A] -> (context [B, Tq, Dv], weights [B, Tq, Tk], probs [B, Tq, Tk] fp32)."""
    return torch.ops.s2s_fast.cuda_additive_attention_fwd(query_proj, key_proj, v, values, mask, packed_tanh)


def additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values, mask, probs,
                           packed_tanh=True):
    """-> (grad_query_proj [B, Tq, A], grad_key_proj [B, Tk, A], grad_v [A], grad_values [B, Tk, Dv])."""
    return torch.ops.s2s_fast.cuda_additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values,
                                                          mask, probs, packed_tanh)


def _forward_fake(query_proj, key_proj, v, values, mask, packed_tanh=True):
    batch, queries = query_proj.shape[:2]
    keys, value_size = values.shape[1:]
    return (values.new_empty(batch, queries, value_size), values.new_empty(batch, queries, keys),
            values.new_empty(batch, queries, keys, dtype=torch.float32))


def _backward_fake(grad_context, grad_weights, query_proj, key_proj, v, values, mask, probs, packed_tanh=True):
    return (query_proj.new_empty(query_proj.shape), key_proj.new_empty(key_proj.shape), v.new_empty(v.shape),
            values.new_empty(values.shape))


def _setup_context(ctx, inputs, output):
    probs = output[2]
    ctx.mark_non_differentiable(probs)
    save_inputs(ctx, inputs, probs)


def _backward(ctx, grad_context, grad_weights, _grad_probs):
    inputs, (probs,) = saved_inputs(ctx)
    query_proj, key_proj, v, values, mask, packed_tanh = inputs
    grads = additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values, mask, probs,
                                   packed_tanh)
    needs = ctx.needs_input_grad
    return tuple(grad if need else None for grad, need in zip(grads, needs[:4])) + (None, None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cuda_additive_attention_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cuda_additive_attention_fwd",
                                    with_double_backward("additive_attention", 5, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cuda_additive_attention_bwd", _backward_fake)


def additive_attention(query_proj, key_proj, v, values, mask=None, packed_tanh=False):
    """Additive attention on CUDA tensors; see s2s_fast.functional.additive_attention.

    Args:
        query_proj: [B, Tq, A]. key_proj: [B, Tk, A]. v: [A]. values: [B, Tk, Dv].
        mask: bool [B, Tk], True = attend, or None.
        packed_tanh: float16/bfloat16 only: two tanh per packed instruction (True) or one scalar each (False).

    Returns:
        (context [B, Tq, Dv], weights [B, Tq, Tk]).
    """
    context, weights, _ = additive_attention_fwd(query_proj, key_proj, v, values, mask, packed_tanh)
    return context, weights


def additive_attention_limit(query_proj, key_proj, v, values, mask=None) -> str | None:
    """None when additive_attention serves the call, else the limit it hits."""
    reason = dtype_limit(values) or compiled.MISSING_REASON
    if reason is not None:
        return reason
    attn, value_size, batch = key_proj.shape[-1], values.shape[-1], key_proj.shape[0]
    max_width, max_batch = compiled.KERNEL_LIMITS["attention_max_width"], compiled.KERNEL_LIMITS["attention_max_batch"]
    if attn > max_width or value_size > max_width:
        return f"attention width A = {attn} and value size Dv = {value_size} must be at most {max_width}"
    if batch > max_batch:
        return f"batch {batch} is over the {max_batch} rows the backward grid takes"
    return None
