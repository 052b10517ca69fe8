"""One GRU step in Triton: both gate GEMMs and the pointwise cell in one kernel, backward fused pointwise + GEMMs.

Gate order (r, z, n) and formulas as torch.nn.GRUCell: r = sigmoid(x W_ir + b_ir + h W_hr + b_hr), z likewise,
n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), h' = n + z * (h - n). Forward: each program accumulates four
[BLOCK_B, BLOCK_H] tiles with tl.dot (r and z sum both GEMMs; the new gate keeps its input and hidden parts apart
because r scales only the hidden part), applies the cell, writes h' and (r, z, n, h W_hn + b_hn) for backward.
Backward: one pointwise kernel gives the gradients of both gate pre-activations and the direct path to h; library
GEMMs give d input, d h, d W_ih, d W_hh.

Serves float16, bfloat16 (on the GPU only, as lstm_cell) and float32, every size with tensors below 2**31 elements
(tiled with masks).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .utils import block_size, device_guard, dot_precision, gemm_blocks, rnn_limit, sigmoid, tanh


@triton.jit
def gru_gates_matmul(
    acc_r, acc_z, acc_n,  # [BB, BH] float32 accumulators of the three gates
    a_ptr,  # [B, K] left operand (input or hidden state)
    stride_ab, stride_ak,
    w_ptr,  # [3H, K] weight, gate j in rows j*H .. j*H+H-1
    stride_wn, stride_wk,
    o_b, m_b,  # [BB] batch rows of the tile and their validity
    o_h, m_h,  # [BH] hidden units of the tile and their validity
    size_k,
    hidden,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc_j += a[o_b, :] @ w[j*H + o_h, :]^T for the three gates j, the left tile loaded once per K chunk."""
    p_w = w_ptr + o_h[None, :] * stride_wn  # [1, BH]
    gate_stride = hidden * stride_wn
    for k0 in range(0, size_k, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < size_k
        b_a = tl.load(a_ptr + o_b[:, None] * stride_ab + o_k[None, :] * stride_ak,
                      mask=m_b[:, None] & m_k[None, :], other=0.0)  # [BB, BK]
        p_wk = p_w + o_k[:, None] * stride_wk  # [BK, BH]
        m_w = m_k[:, None] & m_h[None, :]
        acc_r = tl.dot(b_a, tl.load(p_wk, mask=m_w, other=0.0), acc_r, input_precision=DOT_PRECISION)
        acc_z = tl.dot(b_a, tl.load(p_wk + gate_stride, mask=m_w, other=0.0), acc_z, input_precision=DOT_PRECISION)
        acc_n = tl.dot(b_a, tl.load(p_wk + 2 * gate_stride, mask=m_w, other=0.0), acc_n,
                       input_precision=DOT_PRECISION)
    return acc_r, acc_z, acc_n


@triton.jit
def gru_pointwise(pre_r, pre_z, n_input, n_hidden, h):
    """r, z, n and h' from the summed r and z pre-activations, the new gate's two parts and the old h (float32)."""
    reset = sigmoid(pre_r)
    update = sigmoid(pre_z)
    new = tanh(n_input + reset * n_hidden, False)
    return reset, update, new, new + update * (h - new)


@triton.jit
def _gru_cell_fwd_kernel(
    x_ptr,  # [B, I]
    h_ptr,  # [B, H]
    w_ih_ptr,  # [3H, I]
    w_hh_ptr,  # [3H, H]
    b_ih_ptr,  # [3H], read when HAS_BIAS_IH
    b_hh_ptr,  # [3H], read when HAS_BIAS_HH
    hy_ptr,  # [B, H] contiguous output
    saved_ptr,  # [B, 4H] contiguous output: r, z, n and the hidden part of n (h W_hn + b_hn) for backward
    batch,
    input_size,
    hidden,
    stride_xb, stride_xk,
    stride_hb, stride_hk,
    stride_win, stride_wik,
    stride_whn, stride_whk,
    stride_bih, stride_bhh,
    HAS_BIAS_IH: tl.constexpr,
    HAS_BIAS_HH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # int64: row offsets times strides
    o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m_b = o_b < batch
    m_h = o_h < hidden
    acc_r = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_z = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_n_input = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_n_hidden = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    # r and z sum both GEMMs; the new gate keeps its input and hidden parts apart.
    acc_r, acc_z, acc_n_input = gru_gates_matmul(acc_r, acc_z, acc_n_input, x_ptr, stride_xb, stride_xk, w_ih_ptr,
                                                 stride_win, stride_wik, o_b, m_b, o_h, m_h, input_size, hidden,
                                                 DOT_PRECISION, BLOCK_K)
    acc_r, acc_z, acc_n_hidden = gru_gates_matmul(acc_r, acc_z, acc_n_hidden, h_ptr, stride_hb, stride_hk, w_hh_ptr,
                                                  stride_whn, stride_whk, o_b, m_b, o_h, m_h, hidden, hidden,
                                                  DOT_PRECISION, BLOCK_K)
    if HAS_BIAS_IH:
        acc_r += tl.load(b_ih_ptr + o_h * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_ih_ptr + (hidden + o_h) * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_n_input += tl.load(b_ih_ptr + (2 * hidden + o_h) * stride_bih, mask=m_h,
                               other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS_HH:
        acc_r += tl.load(b_hh_ptr + o_h * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_hh_ptr + (hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_n_hidden += tl.load(b_hh_ptr + (2 * hidden + o_h) * stride_bhh, mask=m_h,
                                other=0.0).to(tl.float32)[None, :]
    m_bh = m_b[:, None] & m_h[None, :]
    b_h_old = tl.load(h_ptr + o_b[:, None] * stride_hb + o_h[None, :] * stride_hk, mask=m_bh, other=0.0)
    reset, update, new, h_new = gru_pointwise(acc_r, acc_z, acc_n_input, acc_n_hidden, b_h_old.to(tl.float32))
    tl.store(hy_ptr + o_b.to(tl.int64)[:, None] * hidden + o_h[None, :], h_new.to(hy_ptr.dtype.element_ty),
             mask=m_bh)
    p_saved = saved_ptr + o_b.to(tl.int64)[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_saved, reset.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + hidden, update.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + 2 * hidden, new.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + 3 * hidden, acc_n_hidden.to(saved_ptr.dtype.element_ty), mask=m_bh)


@triton.jit
def gru_pointwise_backward(dh, h, reset, update, new, n_hidden):
    """Gradients of the (r, z, n) pre-activations and the direct path to h, from that of h' (float32 blocks)."""
    d_new = dh * (1.0 - update) * (1.0 - new * new)  # through tanh
    d_update = dh * (h - new) * update * (1.0 - update)  # through sigmoid
    d_reset = d_new * n_hidden * reset * (1.0 - reset)  # through sigmoid
    return d_reset, d_update, d_new, dh * update


@triton.jit
def store_gru_gate_grads(grad_input_gates_ptr, grad_hidden_gates_ptr, o_gates, hidden, d_reset, d_update, d_new,
                         reset, mask):
    """Write the gradients of x W_ih^T + b_ih and of h W_hh^T + b_hh ([.., 3H] rows at ``o_gates``): they differ
    only in the new gate, whose hidden part r scales."""
    dtype = grad_input_gates_ptr.dtype.element_ty
    tl.store(grad_input_gates_ptr + o_gates, d_reset.to(dtype), mask=mask)
    tl.store(grad_input_gates_ptr + o_gates + hidden, d_update.to(dtype), mask=mask)
    tl.store(grad_input_gates_ptr + o_gates + 2 * hidden, d_new.to(dtype), mask=mask)
    tl.store(grad_hidden_gates_ptr + o_gates, d_reset.to(dtype), mask=mask)
    tl.store(grad_hidden_gates_ptr + o_gates + hidden, d_update.to(dtype), mask=mask)
    tl.store(grad_hidden_gates_ptr + o_gates + 2 * hidden, (d_new * reset).to(dtype), mask=mask)


@triton.jit
def _gru_cell_bwd_kernel(
    grad_hy_ptr,  # [B, H]
    h_ptr,  # [B, H] hidden state before the step
    saved_ptr,  # [B, 4H] contiguous: r, z, n, h W_hn + b_hn from forward
    grad_input_gates_ptr,  # [B, 3H] contiguous output: gradient of x W_ih^T + b_ih
    grad_hidden_gates_ptr,  # [B, 3H] contiguous output: gradient of h W_hh^T + b_hh
    grad_h_direct_ptr,  # [B, H] contiguous output: gradient of h through h' = n + z (h - n) alone
    batch,
    hidden,
    stride_dhb, stride_dhh,
    stride_hb, stride_hh,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # int64: row offsets times strides
    o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m_bh = (o_b < batch)[:, None] & (o_h < hidden)[None, :]
    b_dh = tl.load(grad_hy_ptr + o_b[:, None] * stride_dhb + o_h[None, :] * stride_dhh, mask=m_bh,
                   other=0.0).to(tl.float32)
    b_h = tl.load(h_ptr + o_b[:, None] * stride_hb + o_h[None, :] * stride_hh, mask=m_bh, other=0.0).to(tl.float32)
    p_saved = saved_ptr + o_b.to(tl.int64)[:, None] * (4 * hidden) + o_h[None, :]
    reset = tl.load(p_saved, mask=m_bh, other=0.0).to(tl.float32)
    update = tl.load(p_saved + hidden, mask=m_bh, other=0.0).to(tl.float32)
    new = tl.load(p_saved + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    n_hidden = tl.load(p_saved + 3 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    d_reset, d_update, d_new, d_direct = gru_pointwise_backward(b_dh, b_h, reset, update, new, n_hidden)
    o_gates = o_b.to(tl.int64)[:, None] * (3 * hidden) + o_h[None, :]
    store_gru_gate_grads(grad_input_gates_ptr, grad_hidden_gates_ptr, o_gates, hidden, d_reset, d_update, d_new,
                         reset, m_bh)
    tl.store(grad_h_direct_ptr + o_b.to(tl.int64)[:, None] * hidden + o_h[None, :],
             d_direct.to(grad_h_direct_ptr.dtype.element_ty), mask=m_bh)


@triton_op("s2s_fast::triton_gru_cell_fwd", mutates_args={})
def gru_cell_fwd(input: torch.Tensor, hx: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                 bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes as gru_cell; returns (hy [B, H], saved [B, 4H] = r, z, n, h W_hn + b_hn kept for backward)."""
    batch, input_size = input.shape
    hidden = hx.shape[1]
    hy = torch.empty(batch, hidden, device=input.device, dtype=input.dtype)
    saved = torch.empty(batch, 4 * hidden, device=input.device, dtype=input.dtype)
    block_b, block_h, block_k = gemm_blocks(batch, hidden, input.dtype)
    bias_ih_arg = bias_ih if bias_ih is not None else weight_ih
    bias_hh_arg = bias_hh if bias_hh is not None else weight_hh
    with device_guard(input):
        wrap_triton(_gru_cell_fwd_kernel)[(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))](
            input, hx, weight_ih, weight_hh, bias_ih_arg, bias_hh_arg, hy, saved,
            batch, input_size, hidden,
            *input.stride(), *hx.stride(), *weight_ih.stride(), *weight_hh.stride(),
            bias_ih.stride(0) if bias_ih is not None else 0, bias_hh.stride(0) if bias_hh is not None else 0,
            HAS_BIAS_IH=bias_ih is not None, HAS_BIAS_HH=bias_hh is not None,
            DOT_PRECISION=dot_precision(input.dtype), BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
        )
    return hy, saved


@triton_op("s2s_fast::triton_gru_cell_bwd", mutates_args={})
def gru_cell_bwd(grad_hy: torch.Tensor, input: torch.Tensor, hx: torch.Tensor, weight_ih: torch.Tensor,
                 weight_hh: torch.Tensor, saved: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                        torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (input, hx, weight_ih, weight_hh, bias_ih, bias_hh) from that of hy."""
    batch, hidden = hx.shape
    grad_input_gates = torch.empty(batch, 3 * hidden, device=input.device, dtype=input.dtype)
    grad_hidden_gates = torch.empty_like(grad_input_gates)
    grad_h_direct = torch.empty(batch, hidden, device=input.device, dtype=input.dtype)
    block_b, block_h = block_size(batch, 1, 16), block_size(hidden, 16, 64)
    with device_guard(input):
        wrap_triton(_gru_cell_bwd_kernel)[(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))](
            grad_hy, hx, saved, grad_input_gates, grad_hidden_gates, grad_h_direct, batch, hidden,
            *grad_hy.stride(), *hx.stride(), BLOCK_B=block_b, BLOCK_H=block_h,
        )
    return (grad_input_gates @ weight_ih, torch.addmm(grad_h_direct, grad_hidden_gates, weight_hh),
            grad_input_gates.t() @ input, grad_hidden_gates.t() @ hx, grad_input_gates.sum(0),
            grad_hidden_gates.sum(0))


def _setup_context(ctx, inputs, output):
    _, _, _, _, bias_ih, bias_hh = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    save_inputs(ctx, inputs, output[1])


def _backward(ctx, grad_hy, _):
    inputs, (saved,) = saved_inputs(ctx)
    grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = gru_cell_bwd(grad_hy, *inputs[:4], saved)
    has_bias_ih, has_bias_hh = ctx.has_bias
    return (grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_b_ih if has_bias_ih else None,
            grad_b_hh if has_bias_hh else None)


gru_cell_fwd.register_autograd(with_double_backward("gru_cell", 6, _backward), setup_context=_setup_context)


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One fused GRU step; arguments and results as s2s_fast.functional.gru_cell.

    Args:
        input: [B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.

    Returns:
        hy [B, H].
    """
    return gru_cell_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)[0]


def gru_cell_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """None when the kernels serve this call, else the limit it hits."""
    return rnn_limit(input, hx, weight_ih, weight_hh)
