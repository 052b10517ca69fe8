"""Fused additive (Bahdanau) attention in Triton, forward and backward, without a [B, Tq, Tk, A] tensor.

scores[b, q, k] = sum_a v[a] * tanh(query_proj[b, q, a] + key_proj[b, k, a]); weights = masked softmax over k;
context = weights @ values.

Forward: one kernel per (batch, query tile) computes the scores tile by tile with the A loop in chunks (the tanh
work, the expensive part), keeps a running max and sum, and writes normalised weights; context is one batched GEMM.
Backward: dscores comes from the O(B*Tq*Tk) softmax backward, done inside a kernel tiled over (batch, A chunk) that
recomputes tanh: each program owns its A chunk of d query_proj, d key_proj and d v, so nothing races.
Saved for backward: the inputs and the weights (an output), nothing of size B*Tq*Tk*A.

Serves float16, bfloat16 and float32 (float32 accumulation), every size (all loops are tiled; offsets across the
batch are 64-bit, within one batch row's tensors 32-bit), masks with empty rows (zero weights and context).
bfloat16 on the GPU uses the hardware tanh approximation (its error is far below bfloat16's rounding).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .utils import INDEX_LIMIT, block_size, device_guard, interpreting, tanh

# Elements of the [BLOCK_Q, BLOCK_K, BLOCK_A] tanh tile of one program: 32 registers per thread at 4 warps.
_TILE_ELEMENTS = 4096


@triton.jit
def _additive_attention_fwd_kernel(
    query_ptr,  # [B, Tq, A]
    key_ptr,  # [B, Tk, A]
    v_ptr,  # [A]
    mask_ptr,  # [B, Tk] bool, read when HAS_MASK
    scores_ptr,  # [B, Tq, Tk] float32 scratch: raw scores between the two passes
    weights_ptr,  # [B, Tq, Tk] output
    num_queries,
    num_keys,
    attn_size,
    stride_qb, stride_qt, stride_qa,
    stride_kb, stride_kt, stride_ka,
    stride_v,
    stride_mb, stride_mk,
    HAS_MASK: tl.constexpr,
    FAST_TANH: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_q = tl.program_id(1)
    o_q = i_q.to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)  # int64, as every offset times a stride below
    m_q = o_q < num_queries
    p_query = query_ptr + i_b * stride_qb + o_q[:, None] * stride_qt  # [BQ, 1]
    p_rows = (i_b * num_queries + o_q[:, None]) * num_keys  # [BQ, 1] row starts in scores and weights
    b_max = tl.full([BLOCK_Q], float("-inf"), dtype=tl.float32)
    b_sum = tl.zeros([BLOCK_Q], dtype=tl.float32)
    for k0 in range(0, num_keys, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        m_k = o_k < num_keys
        p_key = key_ptr + i_b * stride_kb + o_k[:, None] * stride_kt  # [BK, 1]
        # [BQ, BK, BA]: the A axis is summed once per key tile, after the loop, not once per chunk of A (a
        # reduction across lanes per chunk made the loop bound by shuffles rather than by tanh).
        b_acc = tl.zeros([BLOCK_Q, BLOCK_K, BLOCK_A], dtype=tl.float32)
        for a0 in range(0, attn_size, BLOCK_A):
            o_a = a0 + tl.arange(0, BLOCK_A).to(tl.int64)
            m_a = o_a < attn_size
            b_q = tl.load(p_query + o_a[None, :] * stride_qa, mask=m_q[:, None] & m_a[None, :], other=0.0)
            b_k = tl.load(p_key + o_a[None, :] * stride_ka, mask=m_k[:, None] & m_a[None, :], other=0.0)
            b_v = tl.load(v_ptr + o_a * stride_v, mask=m_a, other=0.0).to(tl.float32)  # [BA]
            b_t = tanh(b_q.to(tl.float32)[:, None, :] + b_k.to(tl.float32)[None, :, :], FAST_TANH)
            b_acc += b_t * b_v[None, None, :]
        b_s = tl.sum(b_acc, axis=2)
        m_keep = m_k[None, :]
        if HAS_MASK:
            b_mask = tl.load(mask_ptr + i_b * stride_mb + o_k * stride_mk, mask=m_k, other=0)
            m_keep = m_keep & (b_mask != 0)[None, :]
        b_s = tl.where(m_keep, b_s, float("-inf"))
        tl.store(scores_ptr + p_rows + o_k[None, :], b_s, mask=m_q[:, None] & m_k[None, :])
        b_new_max = tl.maximum(b_max, tl.max(b_s, axis=1))
        # An all-masked row keeps max -inf; shifting by 0 then leaves every exp at 0.
        b_shift = tl.where(b_new_max == float("-inf"), 0.0, b_new_max)
        b_sum = b_sum * tl.exp(b_max - b_shift) + tl.sum(tl.exp(b_s - b_shift[:, None]), axis=1)
        b_max = b_new_max
    b_shift = tl.where(b_max == float("-inf"), 0.0, b_max)
    b_scale = 1.0 / tl.where(b_sum > 0.0, b_sum, float("inf"))  # 0 for an all-masked row
    # The second pass reads raw scores that other threads of this program stored.
    tl.debug_barrier()
    for k0 in range(0, num_keys, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_store = m_q[:, None] & (o_k < num_keys)[None, :]
        b_s = tl.load(scores_ptr + p_rows + o_k[None, :], mask=m_store, other=float("-inf"))
        b_w = tl.exp(b_s - b_shift[:, None]) * b_scale[:, None]
        tl.store(weights_ptr + p_rows + o_k[None, :], b_w.to(weights_ptr.dtype.element_ty), mask=m_store)


@triton.jit
def _additive_attention_scores_bwd_kernel(
    weights_ptr,  # [B, Tq, Tk] contiguous, saved from forward
    grad_probs_ptr,  # [B, Tq, Tk] contiguous: total gradient of the weights (direct + through context)
    grad_scores_ptr,  # [B, Tq, Tk] contiguous float32 output: w * (dw - sum_k w * dw)
    num_queries,
    num_keys,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Softmax backward, once per (batch row, tile of queries): the input-gradient kernel's programs, one per chunk
    of A, all read its result instead of each forming it again."""
    i_b = tl.program_id(0).to(tl.int64)
    o_q = tl.program_id(1).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    m_q = o_q < num_queries
    p_rows = (i_b * num_queries + o_q[:, None]) * num_keys  # [BQ, 1]
    b_delta = tl.zeros([BLOCK_Q], dtype=tl.float32)
    for k0 in range(0, num_keys, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_qk = m_q[:, None] & (o_k < num_keys)[None, :]
        b_w = tl.load(weights_ptr + p_rows + o_k[None, :], mask=m_qk, other=0.0).to(tl.float32)
        b_dw = tl.load(grad_probs_ptr + p_rows + o_k[None, :], mask=m_qk, other=0.0).to(tl.float32)
        b_delta += tl.sum(b_w * b_dw, axis=1)
    for k0 in range(0, num_keys, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_qk = m_q[:, None] & (o_k < num_keys)[None, :]
        b_w = tl.load(weights_ptr + p_rows + o_k[None, :], mask=m_qk, other=0.0).to(tl.float32)
        b_dw = tl.load(grad_probs_ptr + p_rows + o_k[None, :], mask=m_qk, other=0.0).to(tl.float32)
        tl.store(grad_scores_ptr + p_rows + o_k[None, :], b_w * (b_dw - b_delta[:, None]), mask=m_qk)


@triton.jit
def _additive_attention_bwd_kernel(
    query_ptr,  # [B, Tq, A]
    key_ptr,  # [B, Tk, A]
    v_ptr,  # [A]
    grad_scores_ptr,  # [B, Tq, Tk] contiguous float32: dscores (0 on masked keys)
    grad_query_ptr,  # [B, Tq, A] contiguous output
    grad_key_ptr,  # [B, Tk, A] contiguous output, written by the last tile of queries
    grad_key_partial_ptr,  # [B, Tk, A] contiguous float32: the sum over earlier tiles of queries, when there are some
    grad_v_ptr,  # [B, A] contiguous float32 output: per-batch partial sums of d v
    num_queries,
    num_keys,
    attn_size,
    stride_qb, stride_qt, stride_qa,
    stride_kb, stride_kt, stride_ka,
    stride_v,
    FAST_TANH: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    i_b = tl.program_id(0).to(tl.int64)
    i_a = tl.program_id(1)
    o_a = i_a.to(tl.int64) * BLOCK_A + tl.arange(0, BLOCK_A)  # int64, as every offset times a stride below
    m_a = o_a < attn_size
    b_v = tl.load(v_ptr + o_a * stride_v, mask=m_a, other=0.0).to(tl.float32)  # [BA]
    # d v and d query_proj accumulate in [BQ, BK, BA] and are summed once per tile of queries, not once per tile of
    # keys: the sums across lanes and warps would otherwise bound the loop, not tanh.
    b_dv3 = tl.zeros([BLOCK_Q, BLOCK_K, BLOCK_A], dtype=tl.float32)
    for q0 in range(0, num_queries, BLOCK_Q):
        o_q = q0 + tl.arange(0, BLOCK_Q).to(tl.int64)
        m_q = o_q < num_queries
        p_rows = (i_b * num_queries + o_q[:, None]) * num_keys  # [BQ, 1]
        b_q = tl.load(query_ptr + i_b * stride_qb + o_q[:, None] * stride_qt + o_a[None, :] * stride_qa,
                      mask=m_q[:, None] & m_a[None, :], other=0.0).to(tl.float32)  # [BQ, BA]
        b_dq3 = tl.zeros([BLOCK_Q, BLOCK_K, BLOCK_A], dtype=tl.float32)
        last_tile = q0 + BLOCK_Q >= num_queries
        for k0 in range(0, num_keys, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
            m_k = o_k < num_keys
            b_ds = tl.load(grad_scores_ptr + p_rows + o_k[None, :], mask=m_q[:, None] & m_k[None, :],
                           other=0.0)  # [BQ, BK]
            b_k = tl.load(key_ptr + i_b * stride_kb + o_k[:, None] * stride_kt + o_a[None, :] * stride_ka,
                          mask=m_k[:, None] & m_a[None, :], other=0.0).to(tl.float32)  # [BK, BA]
            b_t = tanh(b_q[:, None, :] + b_k[None, :, :], FAST_TANH)  # [BQ, BK, BA], recomputed
            b_dv3 += b_ds[:, :, None] * b_t
            b_g = b_ds[:, :, None] * (1.0 - b_t * b_t)  # [BQ, BK, BA] dscores * tanh'
            b_dq3 += b_g
            o_dk = (i_b * num_keys + o_k[:, None]) * attn_size + o_a[None, :]  # [BK, BA]
            m_dk = m_k[:, None] & m_a[None, :]
            # This program owns its A chunk of d key_proj: earlier tiles of queries leave their sum in float32, the
            # last one adds its part and writes the result in the output's dtype.
            b_dk = tl.load(grad_key_partial_ptr + o_dk, mask=m_dk & (q0 > 0), other=0.0) + \
                tl.sum(b_g, axis=0) * b_v[None, :]
            if last_tile:
                tl.store(grad_key_ptr + o_dk, b_dk.to(grad_key_ptr.dtype.element_ty), mask=m_dk)
            else:
                tl.store(grad_key_partial_ptr + o_dk, b_dk, mask=m_dk)
        b_dq = tl.sum(b_dq3, axis=1)
        p_dq = grad_query_ptr + (i_b * num_queries + o_q[:, None]) * attn_size + o_a[None, :]
        tl.store(p_dq, (b_dq * b_v[None, :]).to(grad_query_ptr.dtype.element_ty), mask=m_q[:, None] & m_a[None, :])
        # Threads that read d key_proj in the next query tile must see this tile's stores.
        tl.debug_barrier()
    tl.store(grad_v_ptr + i_b * attn_size + o_a, tl.sum(tl.sum(b_dv3, axis=0), axis=0), mask=m_a)


def _blocks(num_queries: int, num_keys: int, attn_size: int) -> tuple[int, int, int]:
    block_q = block_size(num_queries, 1, 16)
    block_a = block_size(attn_size, 16, 32 if block_q <= 8 else 16)
    block_k = block_size(num_keys, 1, max(16, _TILE_ELEMENTS // (block_q * block_a)))
    return block_q, block_k, block_a


def _fast_tanh(tensor: torch.Tensor) -> bool:
    return tensor.dtype == torch.bfloat16 and tensor.is_cuda and not interpreting()


@triton_op("s2s_fast::triton_additive_attention_fwd", mutates_args={})
def additive_attention_fwd(query_proj: torch.Tensor, key_proj: torch.Tensor, v: torch.Tensor, values: torch.Tensor,
                           mask: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """query_proj [B, Tq, A], key_proj [B, Tk, A], v [A], values [B, Tk, Dv], mask [B, Tk] or None.

    Returns (context [B, Tq, Dv], weights [B, Tq, Tk]).
    """
    batch, num_queries, attn_size = query_proj.shape
    num_keys = key_proj.shape[1]
    scores = torch.empty(batch, num_queries, num_keys, device=query_proj.device, dtype=torch.float32)
    weights = torch.empty(batch, num_queries, num_keys, device=query_proj.device, dtype=query_proj.dtype)
    block_q, block_k, block_a = _blocks(num_queries, num_keys, attn_size)
    mask_arg = mask if mask is not None else scores
    mask_strides = mask.stride() if mask is not None else (0, 0)
    with device_guard(query_proj):
        wrap_triton(_additive_attention_fwd_kernel)[(batch, triton.cdiv(num_queries, block_q))](
            query_proj, key_proj, v, mask_arg, scores, weights,
            num_queries, num_keys, attn_size,
            *query_proj.stride(), *key_proj.stride(), v.stride(0), *mask_strides,
            HAS_MASK=mask is not None, FAST_TANH=_fast_tanh(query_proj),
            BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_A=block_a,
        )
    return torch.bmm(weights, values), weights


@triton_op("s2s_fast::triton_additive_attention_bwd", mutates_args={})
def additive_attention_bwd(grad_context: torch.Tensor, grad_weights: torch.Tensor, query_proj: torch.Tensor,
                           key_proj: torch.Tensor, v: torch.Tensor, values: torch.Tensor,
                           weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (query_proj, key_proj, v, values) from those of (context, weights); shapes as in forward."""
    batch, num_queries, attn_size = query_proj.shape
    num_keys = key_proj.shape[1]
    dtype = query_proj.dtype
    grad_values = torch.bmm(weights.transpose(1, 2), grad_context)
    grad_probs = torch.baddbmm(grad_weights, grad_context, values.transpose(1, 2)).contiguous()
    block_q, block_k, block_a = _blocks(num_queries, num_keys, attn_size)
    device = query_proj.device
    grad_scores = torch.empty(batch, num_queries, num_keys, device=device, dtype=torch.float32)
    grad_query = torch.empty(batch, num_queries, attn_size, device=device, dtype=dtype)
    grad_key = torch.empty(batch, num_keys, attn_size, device=device, dtype=dtype)
    # The float32 sum over tiles of queries, needed only when there is more than one tile.
    several_tiles = num_queries > block_q
    grad_key_partial = torch.empty(grad_key.shape if several_tiles else (1,), device=device, dtype=torch.float32)
    grad_v_partial = torch.empty(batch, attn_size, device=device, dtype=torch.float32)
    with device_guard(query_proj):
        wrap_triton(_additive_attention_scores_bwd_kernel)[(batch, triton.cdiv(num_queries, block_q))](
            weights, grad_probs, grad_scores, num_queries, num_keys, BLOCK_Q=block_q, BLOCK_K=block_k,
        )
        wrap_triton(_additive_attention_bwd_kernel)[(batch, triton.cdiv(attn_size, block_a))](
            query_proj, key_proj, v, grad_scores, grad_query, grad_key, grad_key_partial, grad_v_partial,
            num_queries, num_keys, attn_size,
            *query_proj.stride(), *key_proj.stride(), v.stride(0),
            FAST_TANH=_fast_tanh(query_proj), BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_A=block_a,
        )
    return grad_query, grad_key, grad_v_partial.sum(0).to(dtype), grad_values


def _setup_context(ctx, inputs, output):
    save_inputs(ctx, inputs, output[1])


def _backward(ctx, grad_context, grad_weights):
    inputs, (weights,) = saved_inputs(ctx)
    query_proj, key_proj, v, values, _mask = inputs
    grads = additive_attention_bwd(grad_context, grad_weights, query_proj, key_proj, v, values, weights)
    return *grads, None


additive_attention_fwd.register_autograd(with_double_backward("additive_attention", 5, _backward),
                                         setup_context=_setup_context)


def additive_attention(query_proj, key_proj, v, values, mask=None):
    """Fused additive attention; arguments and results as s2s_fast.functional.additive_attention.

    Args:
        query_proj: [B, Tq, A]. key_proj: [B, Tk, A]. v: [A]. values: [B, Tk, Dv].
        mask: bool [B, Tk] (True = attend) or None.

    Returns:
        (context [B, Tq, Dv], weights [B, Tq, Tk]).
    """
    return additive_attention_fwd(query_proj, key_proj, v, values, mask)


def additive_attention_limit(query_proj, key_proj, v, values, mask=None):
    """None when the kernels serve this call, else the limit it hits."""
    if query_proj.dtype == torch.float64:
        return "float64 is not served (the kernels compute in float32); the reference backend serves it"
    if 0 in query_proj.shape or 0 in key_proj.shape or 0 in values.shape:
        return "empty tensors (a zero-size dimension) are not served; the reference backend serves them"
    batch = key_proj.shape[0]
    row_numels = (query_proj.numel() // batch, key_proj.numel() // batch, query_proj.shape[1] * key_proj.shape[1])
    if max(row_numels) >= INDEX_LIMIT:
        return "one batch row of 2**31 elements or more is not served (32-bit offsets inside a row)"
    return None
