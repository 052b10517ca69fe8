"""One LSTM step in Triton: both gate GEMMs and the pointwise cell in one kernel, backward fused pointwise + GEMMs.

Gate order (i, f, g, o) as torch.nn.LSTMCell. Forward: each program computes a [BLOCK_B, BLOCK_H] tile of all four
gates with tl.dot over the input and the hidden features (x @ W_ih^T + h @ W_hh^T + biases), applies the cell and
writes h, c and the activated gates (kept for backward); pre-activation gates never reach memory. Backward: one
pointwise kernel turns (dh, dc) into dgates and dc_prev; library GEMMs give d input, d h, d W_ih, d W_hh.

Serves float16, bfloat16 (on the GPU only: the Triton interpreter's bfloat16 dot is wrong) and float32, every size
with tensors below 2**31 elements (batch, input and hidden dimensions are tiled with masks). float32 follows torch's
TF32 switch for matmuls.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .utils import block_size, device_guard, dot_precision, gemm_blocks, rnn_limit, sigmoid, tanh

@triton.jit
def lstm_gates_matmul(
    acc_i, acc_f, acc_g, acc_o,  # [BB, BH] float32 accumulators of the four gates
    a_ptr,  # [B, K] left operand (input or hidden state)
    stride_ab, stride_ak,
    w_ptr,  # [4H, K] weight, gate j in rows j*H .. j*H+H-1
    stride_wn, stride_wk,
    o_b, m_b,  # [BB] batch rows of the tile and their validity
    o_h, m_h,  # [BH] hidden units of the tile and their validity
    size_k,
    hidden,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc_j += a[o_b, :] @ w[j*H + o_h, :]^T for the four gates j, the left tile loaded once per K chunk."""
    p_w = w_ptr + o_h[None, :] * stride_wn  # [1, BH]
    gate_stride = hidden * stride_wn
    for k0 in range(0, size_k, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < size_k
        b_a = tl.load(a_ptr + o_b[:, None] * stride_ab + o_k[None, :] * stride_ak,
                      mask=m_b[:, None] & m_k[None, :], other=0.0)  # [BB, BK]
        p_wk = p_w + o_k[:, None] * stride_wk  # [BK, BH]
        m_w = m_k[:, None] & m_h[None, :]
        acc_i = tl.dot(b_a, tl.load(p_wk, mask=m_w, other=0.0), acc_i, input_precision=DOT_PRECISION)
        acc_f = tl.dot(b_a, tl.load(p_wk + gate_stride, mask=m_w, other=0.0), acc_f, input_precision=DOT_PRECISION)
        acc_g = tl.dot(b_a, tl.load(p_wk + 2 * gate_stride, mask=m_w, other=0.0), acc_g,
                       input_precision=DOT_PRECISION)
        acc_o = tl.dot(b_a, tl.load(p_wk + 3 * gate_stride, mask=m_w, other=0.0), acc_o,
                       input_precision=DOT_PRECISION)
    return acc_i, acc_f, acc_g, acc_o


@triton.jit
def lstm_pointwise(pre_i, pre_f, pre_g, pre_o, c):
    """Activated gates and the new state from pre-activation gates and the old cell state (float32 blocks)."""
    i = sigmoid(pre_i)
    f = sigmoid(pre_f)
    g = tanh(pre_g, False)
    o = sigmoid(pre_o)
    c_new = f * c + i * g
    h_new = o * tanh(c_new, False)
    return i, f, g, o, c_new, h_new


@triton.jit
def lstm_pointwise_backward(dh, dc, i, f, g, o, c_prev, c_new):
    """Gradients of the four pre-activation gates and of c_prev from those of h_new and c_new (float32 blocks)."""
    tanh_c = tanh(c_new, False)
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    d_i = dc_total * g * i * (1.0 - i)
    d_f = dc_total * c_prev * f * (1.0 - f)
    d_g = dc_total * i * (1.0 - g * g)
    d_o = dh * tanh_c * o * (1.0 - o)
    return d_i, d_f, d_g, d_o, dc_total * f


@triton.jit
def _lstm_cell_fwd_kernel(
    x_ptr,  # [B, I]
    h_ptr,  # [B, H]
    c_ptr,  # [B, H]
    w_ih_ptr,  # [4H, I]
    w_hh_ptr,  # [4H, H]
    b_ih_ptr,  # [4H], read when HAS_BIAS_IH
    b_hh_ptr,  # [4H], read when HAS_BIAS_HH
    hy_ptr,  # [B, H] contiguous output
    cy_ptr,  # [B, H] contiguous output
    gates_ptr,  # [B, 4H] contiguous output: activated i, f, g, o for backward
    batch,
    input_size,
    hidden,
    stride_xb, stride_xk,
    stride_hb, stride_hk,
    stride_cb, stride_ch,
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
    acc_i = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_f = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
    acc_i, acc_f, acc_g, acc_o = lstm_gates_matmul(acc_i, acc_f, acc_g, acc_o, x_ptr, stride_xb, stride_xk,
                                                   w_ih_ptr, stride_win, stride_wik, o_b, m_b, o_h, m_h,
                                                   input_size, hidden, DOT_PRECISION, BLOCK_K)
    acc_i, acc_f, acc_g, acc_o = lstm_gates_matmul(acc_i, acc_f, acc_g, acc_o, h_ptr, stride_hb, stride_hk,
                                                   w_hh_ptr, stride_whn, stride_whk, o_b, m_b, o_h, m_h,
                                                   hidden, hidden, DOT_PRECISION, BLOCK_K)
    if HAS_BIAS_IH:
        acc_i += tl.load(b_ih_ptr + o_h * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_f += tl.load(b_ih_ptr + (hidden + o_h) * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.load(b_ih_ptr + (2 * hidden + o_h) * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_o += tl.load(b_ih_ptr + (3 * hidden + o_h) * stride_bih, mask=m_h, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS_HH:
        acc_i += tl.load(b_hh_ptr + o_h * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_f += tl.load(b_hh_ptr + (hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.load(b_hh_ptr + (2 * hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_o += tl.load(b_hh_ptr + (3 * hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
    m_bh = m_b[:, None] & m_h[None, :]
    b_c = tl.load(c_ptr + o_b[:, None] * stride_cb + o_h[None, :] * stride_ch, mask=m_bh, other=0.0)
    i, f, g, o, c_new, h_new = lstm_pointwise(acc_i, acc_f, acc_g, acc_o, b_c.to(tl.float32))
    o_state = o_b.to(tl.int64)[:, None] * hidden + o_h[None, :]  # [BB, BH]
    tl.store(hy_ptr + o_state, h_new.to(hy_ptr.dtype.element_ty), mask=m_bh)
    tl.store(cy_ptr + o_state, c_new.to(cy_ptr.dtype.element_ty), mask=m_bh)
    p_gates = gates_ptr + o_b.to(tl.int64)[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_gates, i.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + hidden, f.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + 2 * hidden, g.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + 3 * hidden, o.to(gates_ptr.dtype.element_ty), mask=m_bh)


@triton.jit
def _lstm_cell_bwd_kernel(
    grad_hy_ptr,  # [B, H]
    grad_cy_ptr,  # [B, H]
    gates_ptr,  # [B, 4H] contiguous, activated gates from forward
    c_ptr,  # [B, H] cell state before the step
    cy_ptr,  # [B, H] contiguous, cell state after the step
    grad_gates_ptr,  # [B, 4H] contiguous output: gradient of the pre-activation gates
    grad_c_ptr,  # [B, H] contiguous output
    batch,
    hidden,
    stride_dhb, stride_dhh,
    stride_dcb, stride_dch,
    stride_cb, stride_ch,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # int64: row offsets times strides
    o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    m_bh = (o_b < batch)[:, None] & (o_h < hidden)[None, :]
    b_dh = tl.load(grad_hy_ptr + o_b[:, None] * stride_dhb + o_h[None, :] * stride_dhh, mask=m_bh, other=0.0)
    b_dc = tl.load(grad_cy_ptr + o_b[:, None] * stride_dcb + o_h[None, :] * stride_dch, mask=m_bh, other=0.0)
    b_c = tl.load(c_ptr + o_b[:, None] * stride_cb + o_h[None, :] * stride_ch, mask=m_bh, other=0.0)
    o_state = o_b.to(tl.int64)[:, None] * hidden + o_h[None, :]
    b_cy = tl.load(cy_ptr + o_state, mask=m_bh, other=0.0)
    p_gates = gates_ptr + o_b.to(tl.int64)[:, None] * (4 * hidden) + o_h[None, :]
    b_i = tl.load(p_gates, mask=m_bh, other=0.0).to(tl.float32)
    b_f = tl.load(p_gates + hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_g = tl.load(p_gates + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_o = tl.load(p_gates + 3 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    d_i, d_f, d_g, d_o, d_c = lstm_pointwise_backward(b_dh.to(tl.float32), b_dc.to(tl.float32), b_i, b_f, b_g, b_o,
                                                      b_c.to(tl.float32), b_cy.to(tl.float32))
    p_grad_gates = grad_gates_ptr + o_b.to(tl.int64)[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_grad_gates, d_i.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + hidden, d_f.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + 2 * hidden, d_g.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + 3 * hidden, d_o.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(grad_c_ptr + o_state, d_c.to(grad_c_ptr.dtype.element_ty), mask=m_bh)


@triton_op("s2s_fast::triton_lstm_cell_fwd", mutates_args={})
def lstm_cell_fwd(input: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor, weight_ih: torch.Tensor,
                  weight_hh: torch.Tensor, bias_ih: Optional[torch.Tensor],
                  bias_hh: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shapes as lstm_cell; returns (hy [B, H], cy [B, H], activated gates [B, 4H] kept for backward)."""
    batch, input_size = input.shape
    hidden = hx.shape[1]
    hy = torch.empty(batch, hidden, device=input.device, dtype=input.dtype)
    cy = torch.empty_like(hy)
    gates = torch.empty(batch, 4 * hidden, device=input.device, dtype=input.dtype)
    block_b, block_h, block_k = gemm_blocks(batch, hidden, input.dtype)
    bias_ih_arg = bias_ih if bias_ih is not None else weight_ih
    bias_hh_arg = bias_hh if bias_hh is not None else weight_hh
    with device_guard(input):
        wrap_triton(_lstm_cell_fwd_kernel)[(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))](
            input, hx, cx, weight_ih, weight_hh, bias_ih_arg, bias_hh_arg, hy, cy, gates,
            batch, input_size, hidden,
            *input.stride(), *hx.stride(), *cx.stride(), *weight_ih.stride(), *weight_hh.stride(),
            bias_ih.stride(0) if bias_ih is not None else 0, bias_hh.stride(0) if bias_hh is not None else 0,
            HAS_BIAS_IH=bias_ih is not None, HAS_BIAS_HH=bias_hh is not None,
            DOT_PRECISION=dot_precision(input.dtype), BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
        )
    return hy, cy, gates


@triton_op("s2s_fast::triton_lstm_cell_bwd", mutates_args={})
def lstm_cell_bwd(grad_hy: torch.Tensor, grad_cy: torch.Tensor, input: torch.Tensor, hx: torch.Tensor,
                  cx: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, gates: torch.Tensor,
                  cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]:
    """Gradients (input, hx, cx, weight_ih, weight_hh, bias) from those of (hy, cy); bias is either bias's."""
    batch, hidden = hx.shape
    grad_gates = torch.empty(batch, 4 * hidden, device=input.device, dtype=input.dtype)
    grad_cx = torch.empty(batch, hidden, device=input.device, dtype=input.dtype)
    block_b, block_h = block_size(batch, 1, 16), block_size(hidden, 16, 64)
    with device_guard(input):
        wrap_triton(_lstm_cell_bwd_kernel)[(triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))](
            grad_hy, grad_cy, gates, cx, cy, grad_gates, grad_cx, batch, hidden,
            *grad_hy.stride(), *grad_cy.stride(), *cx.stride(), BLOCK_B=block_b, BLOCK_H=block_h,
        )
    return (grad_gates @ weight_ih, grad_gates @ weight_hh, grad_cx, grad_gates.t() @ input, grad_gates.t() @ hx,
            grad_gates.sum(0))


def bias_grads(grad_bias, has_bias_ih: bool, has_bias_hh: bool) -> tuple:
    """The one bias gradient for each bias present; two present biases get separate tensors (their .grad)."""
    if has_bias_ih and has_bias_hh:
        return grad_bias, grad_bias.clone()
    return (grad_bias if has_bias_ih else None), (grad_bias if has_bias_hh else None)


def _setup_context(ctx, inputs, output):
    _, _, _, _, _, bias_ih, bias_hh = inputs
    _, cy, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    save_inputs(ctx, inputs, gates, cy)


def _backward(ctx, grad_hy, grad_cy, _):
    inputs, (gates, cy) = saved_inputs(ctx)
    grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias = lstm_cell_bwd(grad_hy, grad_cy, *inputs[:5],
                                                                                   gates, cy)
    return (grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh) + bias_grads(grad_bias, *ctx.has_bias)


lstm_cell_fwd.register_autograd(with_double_backward("lstm_cell", 7, _backward), setup_context=_setup_context)


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One fused LSTM step; arguments and results as s2s_fast.functional.lstm_cell.

    Args:
        input: [B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.

    Returns:
        (hy [B, H], cy [B, H]).
    """
    hy, cy, _ = lstm_cell_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    return hy, cy


def lstm_cell_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """None when the kernels serve this call, else the limit it hits."""
    return rnn_limit(input, hx, weight_ih, weight_hh)
