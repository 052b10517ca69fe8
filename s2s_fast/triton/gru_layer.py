"""One GRU layer (one direction) over a padded time-major sequence in Triton, forward and backward.

Semantics as s2s_fast.reference.gru_layer, gates (r, z, n) as torch.nn.GRU: row b runs steps 0..lengths[b]-1
(reverse: lengths[b]-1..0), its output is zero past its end, its state holds past its end.

Forward: the input projections of all steps are one GEMM (x W_ih^T + b_ih over [T*B, I]); then each
[BLOCK_B, BLOCK_H] tile of a step computes h_prev @ W_hh^T + b_hh for the three gates with tl.dot (the new gate's
hidden part kept apart, since r scales only it), applies the cell and the length mask, and writes the output, the
new state and (r, z, n, h W_hn + b_hn) for backward. Backward: each tile of a step, in reverse order, completes the
gradient of h after the step with dgates_hidden(next step) @ W_hh (tl.dot over 3H), adds the output's gradient,
and writes this step's gradients of both gate pre-activations (input side and hidden side differ in the new gate)
and the direct part z * dh of the gradient of h before the step. d input, d W_ih, d W_hh and both biases' gradients
are then one GEMM (or sum) each over all steps.

Three schedules of the same tiles, with the same results, as the LSTM layer (see s2s_fast.triton.lstm_layer):
persistent (one launch; program p runs every step of batch rows [16p, 16p+16), a barrier between steps), persistent
spread (one launch over batch tiles x hidden tiles, a barrier across a batch tile's programs between steps) and per
step (T launches over batch tiles x hidden tiles, optionally replayed from a graph captured per shape);
on a GPU the spread one wherever it runs (``utils.spread_by_default``), else ``utils.persistent_schedule`` picks,
and ``step_graphs.replay_by_default`` says whether the per-step one replays.

Serves float16, bfloat16 (on the GPU only, as lstm_cell) and float32, every T >= 1, B, I and H (tiled with masks)
with one step's [B, 4H] below 2**31 elements (offsets across steps are 64-bit), in every schedule (the spread one up
to one program per multiprocessor). Saved for backward: the h states and the gate values [T, B, 4H] (input dtype),
O(T*B*H); the backward's scratch is the two gate gradients [T, B, 3H].
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .gru_cell import gru_gates_matmul, gru_pointwise, gru_pointwise_backward, store_gru_gate_grads
from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .utils import INDEX_LIMIT, layer_schedule, rnn_limit, run_rnn_layer, step_at, wait_for_batch_tile


@triton.jit
def _gru_layer_fwd_tile(
    input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, output_ptr, saved_ptr,
    step,  # int64 scalar: the time step this tile computes
    batch, hidden, stride_whn, stride_whk, stride_bhh,
    o_b, m_b,  # [BB] batch rows of the tile and their validity
    o_h,  # [BH] hidden units of the tile
    REVERSE: tl.constexpr, HAS_BIAS_HH: tl.constexpr, HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One [BB, BH] tile of one forward step: reads the whole h before the step, writes this tile's outputs."""
    m_h = o_h < hidden
    m_bh = m_b[:, None] & m_h[None, :]
    state_size = batch * hidden
    p_h_before = states_h_ptr + (step + REVERSE) * state_size
    o_state = o_b[:, None] * hidden + o_h[None, :]  # [BB, BH] within one step's [B, H]
    acc_r = tl.zeros([o_b.shape[0], o_h.shape[0]], dtype=tl.float32)
    acc_z = tl.zeros_like(acc_r)
    acc_n = tl.zeros_like(acc_r)
    acc_r, acc_z, acc_n = gru_gates_matmul(acc_r, acc_z, acc_n, p_h_before, hidden, 1, w_hh_ptr, stride_whn,
                                           stride_whk, o_b, m_b, o_h, m_h, hidden, hidden, DOT_PRECISION, BLOCK_K)
    if HAS_BIAS_HH:
        acc_r += tl.load(b_hh_ptr + o_h * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_z += tl.load(b_hh_ptr + (hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_n += tl.load(b_hh_ptr + (2 * hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
    p_gates_in = input_gates_ptr + step * batch * 3 * hidden + o_b[:, None] * (3 * hidden) + o_h[None, :]
    b_h_before = tl.load(p_h_before + o_state, mask=m_bh, other=0.0)
    reset, update, new, h_new = gru_pointwise(tl.load(p_gates_in, mask=m_bh, other=0.0).to(tl.float32) + acc_r,
                                              tl.load(p_gates_in + hidden, mask=m_bh, other=0.0).to(tl.float32) + acc_z,
                                              tl.load(p_gates_in + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32),
                                              acc_n, b_h_before.to(tl.float32))
    if HAS_LENGTHS:
        b_valid = (step < tl.load(lengths_ptr + o_b, mask=m_b, other=0))[:, None]  # [BB, 1]
        h_after = tl.where(b_valid, h_new.to(states_h_ptr.dtype.element_ty), b_h_before)
        h_out = tl.where(b_valid, h_new, 0.0)
    else:
        h_after = h_new.to(states_h_ptr.dtype.element_ty)
        h_out = h_new
    tl.store(states_h_ptr + (step + 1 - REVERSE) * state_size + o_state, h_after, mask=m_bh)
    tl.store(output_ptr + step * state_size + o_state, h_out.to(output_ptr.dtype.element_ty), mask=m_bh)
    p_saved = saved_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_saved, reset.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + hidden, update.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + 2 * hidden, new.to(saved_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_saved + 3 * hidden, acc_n.to(saved_ptr.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["step", "steps"])
def _gru_layer_fwd_kernel(
    input_gates_ptr,  # [T, B, 3H] contiguous: x W_ih^T + b_ih of every step
    w_hh_ptr,  # [3H, H]
    b_hh_ptr,  # [3H], read when HAS_BIAS_HH
    lengths_ptr,  # [B] int64, read when HAS_LENGTHS
    states_h_ptr,  # [T+1, B, H] contiguous, input dtype: h before/after each step
    output_ptr,  # [T, B, H] contiguous output
    saved_ptr,  # [T, B, 4H] contiguous output: r, z, n and h W_hn + b_hn of each step, for backward
    barrier_ptr,  # [batch tiles] int32, zeroed: arrivals of each batch tile's programs, used when SPREAD
    step,  # the one step this launch computes, unless PERSISTENT
    steps,
    batch,
    hidden,
    stride_whn, stride_whk,
    stride_bhh,
    PERSISTENT: tl.constexpr,  # every step, all hidden tiles of this program's rows; else one step, one tile
    SPREAD: tl.constexpr,  # with PERSISTENT: every step of one tile, the batch tile's programs in step
    REVERSE: tl.constexpr,  # 1 when the layer runs backwards in time, else 0
    HAS_BIAS_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # int64: row offsets times strides
    m_b = o_b < batch
    if PERSISTENT and SPREAD:
        # Program (p, q) runs tile (p, q) of every step, so it reads only its hidden units' slice of W_hh;
        # the programs of batch tile p wait for each other after each step, whose results they all read.
        o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        for index in range(0, steps):
            step_now = step_at(index, steps, REVERSE)
            _gru_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, output_ptr,
                                saved_ptr, step_now, batch, hidden, stride_whn, stride_whk, stride_bhh, o_b, m_b,
                                o_h, REVERSE, HAS_BIAS_HH, HAS_LENGTHS, DOT_PRECISION,
                                BLOCK_K)
            wait_for_batch_tile(barrier_ptr + tl.program_id(0), (index + 1) * tl.num_programs(1))
    elif PERSISTENT:
        # The h a step writes is read back by the same program after the barrier; no other program waits on it.
        for index in range(0, steps):
            step_now = step_at(index, steps, REVERSE)
            for h0 in range(0, hidden, BLOCK_H):
                _gru_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, output_ptr,
                                    saved_ptr, step_now, batch, hidden, stride_whn, stride_whk, stride_bhh, o_b, m_b,
                                    h0 + tl.arange(0, BLOCK_H), REVERSE, HAS_BIAS_HH, HAS_LENGTHS, DOT_PRECISION,
                                    BLOCK_K)
            tl.debug_barrier()
    else:
        _gru_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, output_ptr, saved_ptr,
                            tl.cast(step, tl.int64), batch, hidden, stride_whn, stride_whk, stride_bhh, o_b, m_b,
                            tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), REVERSE, HAS_BIAS_HH, HAS_LENGTHS,
                            DOT_PRECISION, BLOCK_K)


@triton.jit
def _gru_layer_bwd_tile(
    grad_output_ptr, w_hh_ptr, lengths_ptr, states_h_ptr, saved_ptr, grad_input_gates_ptr, grad_hidden_gates_ptr,
    grad_h_ptr,
    step,  # int64 scalar: the time step this tile computes
    has_next,  # whether a step follows this one in forward order (its hidden-side dgates are written)
    batch, hidden, stride_gob, stride_got, stride_goh, stride_whn, stride_whk,
    o_b, m_b,  # [BB] batch rows of the tile and their validity
    o_h,  # [BH] hidden units of the tile
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One [BB, BH] tile of one backward step: reads the next step's hidden-side dgates of the tile's rows, writes
    this step's dgates and the direct part of the gradient of h before the step."""
    m_h = o_h < hidden
    m_bh = m_b[:, None] & m_h[None, :]
    state_size = batch * hidden
    o_state = o_b[:, None] * hidden + o_h[None, :]  # [BB, BH]
    b_dh = tl.load(grad_h_ptr + o_state, mask=m_bh, other=0.0)
    if has_next:
        # The step after this one (in forward order) took h through its hidden gates: dh += dgates_hidden @ W_hh
        # (zero for rows past their end there, whose dgates are zero).
        p_dgates_next = grad_hidden_gates_ptr + (step + 1 - 2 * REVERSE) * batch * 3 * hidden
        for k0 in range(0, 3 * hidden, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < 3 * hidden
            b_dg = tl.load(p_dgates_next + o_b[:, None] * (3 * hidden) + o_k[None, :],
                           mask=m_b[:, None] & m_k[None, :], other=0.0)  # [BB, BK]
            b_w = tl.load(w_hh_ptr + o_k[:, None] * stride_whn + o_h[None, :] * stride_whk,
                          mask=m_k[:, None] & m_h[None, :], other=0.0)  # [BK, BH]
            b_dh = tl.dot(b_dg, b_w, b_dh, input_precision=DOT_PRECISION)
    b_dout = tl.load(grad_output_ptr + step * stride_got + o_b[:, None] * stride_gob + o_h[None, :] * stride_goh,
                     mask=m_bh, other=0.0).to(tl.float32)
    b_total = b_dh + b_dout
    p_saved = saved_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    reset = tl.load(p_saved, mask=m_bh, other=0.0).to(tl.float32)
    update = tl.load(p_saved + hidden, mask=m_bh, other=0.0).to(tl.float32)
    new = tl.load(p_saved + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    n_hidden = tl.load(p_saved + 3 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_h_before = tl.load(states_h_ptr + (step + REVERSE) * state_size + o_state, mask=m_bh,
                         other=0.0).to(tl.float32)
    d_reset, d_update, d_new, d_direct = gru_pointwise_backward(b_total, b_h_before, reset, update, new, n_hidden)
    if HAS_LENGTHS:
        # Past a row's end the step passes h through unchanged: no gate gradients, dh carried as it is.
        b_valid = (step < tl.load(lengths_ptr + o_b, mask=m_b, other=0))[:, None]
        d_new = tl.where(b_valid, d_new, 0.0)
        d_update = tl.where(b_valid, d_update, 0.0)
        d_reset = tl.where(b_valid, d_reset, 0.0)
        d_direct = tl.where(b_valid, d_direct, b_dh)
    tl.store(grad_h_ptr + o_state, d_direct, mask=m_bh)
    store_gru_gate_grads(grad_input_gates_ptr, grad_hidden_gates_ptr,
                         step * batch * 3 * hidden + o_b[:, None] * (3 * hidden) + o_h[None, :], hidden, d_reset,
                         d_update, d_new, reset, m_bh)


@triton.jit(do_not_specialize=["step", "steps"])
def _gru_layer_bwd_kernel(
    grad_output_ptr,  # [T, B, H]
    w_hh_ptr,  # [3H, H]
    lengths_ptr,  # [B] int64, read when HAS_LENGTHS
    states_h_ptr,  # [T+1, B, H] contiguous, from forward
    saved_ptr,  # [T, B, 4H] contiguous, r, z, n and h W_hn + b_hn from forward
    grad_input_gates_ptr,  # [T, B, 3H] contiguous output: gradient of x W_ih^T + b_ih (0 past a row's end)
    grad_hidden_gates_ptr,  # [T, B, 3H] contiguous output: gradient of h W_hh^T + b_hh (0 past a row's end)
    grad_h_ptr,  # [B, H] contiguous float32, in/out: gradient of h after the step processed last, less the
                 # recurrent term of that step (added here from its hidden-side dgates)
    barrier_ptr,  # [batch tiles] int32, zeroed: arrivals of each batch tile's programs, used when SPREAD
    step,  # the one step this launch computes, unless PERSISTENT
    steps,
    batch,
    hidden,
    stride_gob, stride_got, stride_goh,
    stride_whn, stride_whk,
    PERSISTENT: tl.constexpr,  # every step, all hidden tiles of this program's rows; else one step, one tile
    SPREAD: tl.constexpr,  # with PERSISTENT: every step of one tile, the batch tile's programs in step
    REVERSE: tl.constexpr,  # 1 when the layer runs backwards in time, else 0
    HAS_NEXT: tl.constexpr,  # unless PERSISTENT: whether the step after this one (forward order) has its dgates
    HAS_LENGTHS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    o_b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # int64: row offsets times strides
    m_b = o_b < batch
    if PERSISTENT and SPREAD:
        # Program (p, q) runs tile (p, q) of every step, so it reads only its hidden units' slice of W_hh;
        # the programs of batch tile p wait for each other after each step, whose results they all read.
        o_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        for index in range(0, steps):
            step_now = step_at(index, steps, 1 - REVERSE)
            _gru_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_h_ptr, saved_ptr,
                                grad_input_gates_ptr, grad_hidden_gates_ptr, grad_h_ptr, step_now, index > 0, batch,
                                hidden, stride_gob, stride_got, stride_goh, stride_whn, stride_whk, o_b, m_b,
                                o_h, REVERSE, HAS_LENGTHS, DOT_PRECISION, BLOCK_K)
            wait_for_batch_tile(barrier_ptr + tl.program_id(0), (index + 1) * tl.num_programs(1))
    elif PERSISTENT:
        # In reverse order; the dgates a step writes are read back (all 3H of them) by the same program after the
        # barrier.
        for index in range(0, steps):
            step_now = step_at(index, steps, 1 - REVERSE)
            for h0 in range(0, hidden, BLOCK_H):
                _gru_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_h_ptr, saved_ptr,
                                    grad_input_gates_ptr, grad_hidden_gates_ptr, grad_h_ptr, step_now, index > 0, batch,
                                    hidden, stride_gob, stride_got, stride_goh, stride_whn, stride_whk, o_b, m_b,
                                    h0 + tl.arange(0, BLOCK_H), REVERSE, HAS_LENGTHS, DOT_PRECISION, BLOCK_K)
            tl.debug_barrier()
    else:
        _gru_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_h_ptr, saved_ptr, grad_input_gates_ptr,
                            grad_hidden_gates_ptr, grad_h_ptr, tl.cast(step, tl.int64), HAS_NEXT, batch, hidden,
                            stride_gob, stride_got, stride_goh, stride_whn, stride_whk, o_b, m_b,
                            tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), REVERSE, HAS_LENGTHS, DOT_PRECISION,
                            BLOCK_K)


@triton_op("s2s_fast::triton_gru_layer_fwd", mutates_args={})
def gru_layer_fwd(input: torch.Tensor, hx: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                  bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor], lengths: Optional[torch.Tensor],
                  reverse: bool, persistent: bool, graph: bool = False,
                  spread: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shapes as gru_layer; returns (output [T, B, H], hy [B, H], and for backward: states_h [T+1, B, H],
    saved gate values [T, B, 4H])."""
    steps, batch, _ = input.shape
    hidden = hx.shape[1]
    input_gates = F.linear(input, weight_ih, bias_ih).contiguous()  # [T, B, 3H], one GEMM for all steps
    states_h = torch.empty(steps + 1, batch, hidden, device=input.device, dtype=input.dtype)
    # Negative indices instead of T: indexing with a symbolic size would pin it under torch.compile.
    initial, final = (-1, 0) if reverse else (0, -1)
    states_h[initial] = hx
    output = torch.empty(steps, batch, hidden, device=input.device, dtype=input.dtype)
    saved = torch.empty(steps, batch, 4 * hidden, device=input.device, dtype=input.dtype)
    tensors = dict(input_gates=input_gates, weight_hh=weight_hh, bias_hh=bias_hh, lengths=lengths, states_h=states_h,
                   output=output, saved=saved)
    run_rnn_layer("gru_layer_fwd", wrap_triton(_gru_layer_fwd_kernel), tensors, ("output", "saved"),
                  reverse=reverse, persistent=persistent, spread=spread, graph=graph, backward=False,
                  written=("states_h", "output", "saved"), fresh=("output", "saved"))
    return output, states_h[final].clone(), states_h, saved


@triton_op("s2s_fast::triton_gru_layer_bwd", mutates_args={})
def gru_layer_bwd(grad_output: torch.Tensor, grad_hy: torch.Tensor, input: torch.Tensor, weight_ih: torch.Tensor,
                  weight_hh: torch.Tensor, lengths: Optional[torch.Tensor], reverse: bool, persistent: bool,
                  states_h: torch.Tensor, saved: torch.Tensor, graph: bool = False,
                  spread: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
    """Gradients (input, hx, weight_ih, weight_hh, bias_ih, bias_hh) from those of (output, hy)."""
    steps, batch, input_size = input.shape
    hidden = grad_hy.shape[1]
    grad_input_gates = torch.empty(steps, batch, 3 * hidden, device=input.device, dtype=input.dtype)
    grad_hidden_gates = torch.empty_like(grad_input_gates)
    # The kernels update it in place: a fresh contiguous float32 copy, never the incoming gradient.
    grad_h = grad_hy.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    tensors = dict(grad_output=grad_output, weight_hh=weight_hh, lengths=lengths, states_h=states_h, saved=saved,
                   grad_input_gates=grad_input_gates, grad_hidden_gates=grad_hidden_gates, grad_h=grad_h)
    run_rnn_layer("gru_layer_bwd", wrap_triton(_gru_layer_bwd_kernel), tensors,
                  ("states_h", "saved", "grad_input_gates", "grad_hidden_gates", "grad_h"), reverse=reverse,
                  persistent=persistent, spread=spread, graph=graph, backward=True,
                  written=("grad_input_gates", "grad_hidden_gates", "grad_h"),
                  fresh=("grad_input_gates", "grad_hidden_gates"))
    # The first step's hidden gates took hx: its recurrent term (zero for rows of length 0) completes grad hx.
    grad_hx = grad_h + (grad_hidden_gates[-1 if reverse else 0] @ weight_hh).to(torch.float32)
    flat_input_gates = grad_input_gates.reshape(steps * batch, 3 * hidden)
    flat_hidden_gates = grad_hidden_gates.reshape(steps * batch, 3 * hidden)
    states_before = states_h[1:] if reverse else states_h[:-1]
    grad_input = (flat_input_gates @ weight_ih).reshape(steps, batch, input_size)
    grad_w_ih = flat_input_gates.t() @ input.reshape(steps * batch, input_size)
    grad_w_hh = flat_hidden_gates.t() @ states_before.reshape(steps * batch, hidden)
    return (grad_input, grad_hx.to(input.dtype), grad_w_ih, grad_w_hh, flat_input_gates.sum(0),
            flat_hidden_gates.sum(0))


def _setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, persistent, graph, spread = inputs
    states_h, saved = output[2:]
    ctx.mark_non_differentiable(states_h, saved)
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    ctx.reverse = reverse
    ctx.persistent = persistent
    ctx.graph = graph
    ctx.spread = spread
    save_inputs(ctx, inputs, states_h, saved)


def _backward(ctx, grad_output, grad_hy, *_):
    inputs, (states_h, saved) = saved_inputs(ctx)
    input, _hx, weight_ih, weight_hh, _bias_ih, _bias_hh, lengths = inputs[:7]
    grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = gru_layer_bwd(
        grad_output, grad_hy, input, weight_ih, weight_hh, lengths, ctx.reverse, ctx.persistent, states_h, saved,
        ctx.graph, ctx.spread)
    has_bias_ih, has_bias_hh = ctx.has_bias
    return (grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_b_ih if has_bias_ih else None,
            grad_b_hh if has_bias_hh else None, None, None, None, None, None)


gru_layer_fwd.register_autograd(with_double_backward("gru_layer", 8, _backward), setup_context=_setup_context)


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
              persistent=None, graph=None, spread=None):
    """One fused GRU layer, one direction; arguments and results as s2s_fast.functional.gru_layer.

    Args:
        input: [T, B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.
        lengths: int64 [B] in [0, T] on the input's device, or None. reverse: run each row backwards.
        persistent: one launch for all steps (True), one launch per step (False), or None for
            ``utils.persistent_schedule``'s choice; both compute the same results.
        graph: in the per-step schedule, replay the steps' launches, forward and backward, from a graph captured
            per shape (True; see step_graphs), launch them one by one (False), or None for
            ``step_graphs.replay_by_default``'s choice; the same results.
        spread: with persistent, one program per (batch tile, hidden tile) for all steps, W_hh spread over them,
            the programs of a batch tile waiting for each other between steps (True; ``utils.spread_limit`` says
            where it runs), not (False), or None: the default's choice (``utils.spread_by_default``: on a GPU
            wherever it runs, unless persistent or graph is given).

    Returns:
        (output [T, B, H], hy [B, H]).
    """
    persistent, graph, spread = layer_schedule(3, input, hx, persistent, graph, spread)
    output, hy, *_ = gru_layer_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                                   persistent, graph, spread)
    return output, hy


def gru_layer_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False):
    """None when the kernels serve this call, else the limit it hits."""
    if input.shape[0] == 0:
        return "empty tensors (a zero-size dimension) are not served; the reference backend serves them"
    if hx.shape[0] * 4 * hx.shape[1] >= INDEX_LIMIT:
        return "tensors of one step with 2**31 elements or more are not served (32-bit offsets inside a step)"
    return rnn_limit(input[0], hx, weight_ih, weight_hh)
