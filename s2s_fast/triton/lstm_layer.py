"""One LSTM layer (one direction) over a padded time-major sequence in Triton, forward and backward.

Semantics as s2s_fast.reference.lstm_layer: row b runs steps 0..lengths[b]-1 (reverse: lengths[b]-1..0), its output
is zero past its end, its state holds past its end, so the final state is the one after its last valid step.

Forward: the input projections of all steps are one GEMM (x W_ih^T + b_ih over [T*B, I]); then each
[BLOCK_B, BLOCK_H] tile of a step computes h_prev @ W_hh^T for all four gates with tl.dot, adds the projection and
b_hh, applies the cell, the length mask, and writes the output, the new state and the activated gates (kept for
backward). Backward: each tile of a step, in reverse order, computes dh = dgates(next step) @ W_hh (tl.dot over 4H)
and the pointwise backward, writing this step's dgates; d input, d W_ih, d W_hh and the biases' gradients are then
one GEMM (or sum) each over all steps. States live in [T+1, B, H] buffers indexed so that the state before step t is
at t (forward direction) or t+1 (reverse), so no step overwrites what another program still reads.

Three schedules of the same tiles, with the same results:
- persistent: one launch per direction and pass; program p owns batch rows [16p, 16p+16) and runs all their steps,
  every hidden tile of a step in turn, a barrier between steps (rows never depend on other rows, so no grid-wide
  sync is needed). No per-step launches; each program streams all of W_hh per step, and there are only
  ceil(B / 16) programs.
- persistent spread: one launch per direction and pass over (batch tiles x hidden tiles) programs, at most one per
  multiprocessor; program (p, q) runs tile (p, q) of every step, reading only its hidden units' slice of W_hh, and
  the programs of batch tile p meet at a barrier (utils.wait_for_batch_tile) after each step. The default on a GPU
  wherever it runs (utils.spread_by_default, from the first GPU run's timings).
- per step: T launches per forward and T per backward, each over (batch tiles x hidden tiles) programs, W_hh
  spread over them; optionally replayed from a graph captured per shape (step_graphs), from a shape's third call
  a few copies and one replay per pass.
Elsewhere (and where spread cannot run) ``utils.persistent_schedule`` picks one (persistent while W_hh has at most
PERSISTENT_MAX_WEIGHT_BYTES), and ``step_graphs.replay_by_default`` whether the per-step one replays.

Serves float16, bfloat16 (on the GPU only, as lstm_cell) and float32, every T >= 1, B, I and H (tiled with masks)
with one step's [B, 4H] below 2**31 elements (offsets across steps are 64-bit), in every schedule (the spread one up
to one program per multiprocessor). Besides the step kernels, a few library GEMMs (input projections, weight
gradients). Saved for backward: the h states (input dtype), the c states (float32) and the activated gates, O(T*B*H).
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .lstm_cell import bias_grads, lstm_gates_matmul, lstm_pointwise, lstm_pointwise_backward
from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .utils import layer_schedule, rnn_limit, run_rnn_layer, step_at, wait_for_batch_tile

PROJECTION_LIMIT = ("the triton LSTM layer has no projection (weight_hr, proj_size > 0); the aten and reference "
                    "backends serve it")


@triton.jit
def _lstm_layer_fwd_tile(
    input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, states_c_ptr, output_ptr, gates_ptr,
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
    p_before = step + REVERSE
    p_h_before = states_h_ptr + p_before * state_size
    o_state = o_b[:, None] * hidden + o_h[None, :]  # [BB, BH] within one step's [B, H]
    p_gates_in = input_gates_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    acc_i = tl.load(p_gates_in, mask=m_bh, other=0.0).to(tl.float32)
    acc_f = tl.load(p_gates_in + hidden, mask=m_bh, other=0.0).to(tl.float32)
    acc_g = tl.load(p_gates_in + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    acc_o = tl.load(p_gates_in + 3 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    if HAS_BIAS_HH:
        acc_i += tl.load(b_hh_ptr + o_h * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_f += tl.load(b_hh_ptr + (hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.load(b_hh_ptr + (2 * hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
        acc_o += tl.load(b_hh_ptr + (3 * hidden + o_h) * stride_bhh, mask=m_h, other=0.0).to(tl.float32)[None, :]
    acc_i, acc_f, acc_g, acc_o = lstm_gates_matmul(acc_i, acc_f, acc_g, acc_o, p_h_before, hidden, 1,
                                                   w_hh_ptr, stride_whn, stride_whk, o_b, m_b, o_h, m_h,
                                                   hidden, hidden, DOT_PRECISION, BLOCK_K)
    b_h_before = tl.load(p_h_before + o_state, mask=m_bh, other=0.0)
    b_c_before = tl.load(states_c_ptr + p_before * state_size + o_state, mask=m_bh, other=0.0)
    i, f, g, o, c_new, h_new = lstm_pointwise(acc_i, acc_f, acc_g, acc_o, b_c_before)
    if HAS_LENGTHS:
        b_valid = (step < tl.load(lengths_ptr + o_b, mask=m_b, other=0))[:, None]  # [BB, 1]
        c_after = tl.where(b_valid, c_new, b_c_before)
        h_after = tl.where(b_valid, h_new.to(states_h_ptr.dtype.element_ty), b_h_before)
        h_out = tl.where(b_valid, h_new, 0.0)
    else:
        c_after = c_new
        h_after = h_new.to(states_h_ptr.dtype.element_ty)
        h_out = h_new
    p_after = step + 1 - REVERSE
    tl.store(states_h_ptr + p_after * state_size + o_state, h_after, mask=m_bh)
    tl.store(states_c_ptr + p_after * state_size + o_state, c_after, mask=m_bh)
    tl.store(output_ptr + step * state_size + o_state, h_out.to(output_ptr.dtype.element_ty), mask=m_bh)
    p_gates = gates_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_gates, i.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + hidden, f.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + 2 * hidden, g.to(gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_gates + 3 * hidden, o.to(gates_ptr.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["step", "steps"])
def _lstm_layer_fwd_kernel(
    input_gates_ptr,  # [T, B, 4H] contiguous: x W_ih^T + b_ih of every step
    w_hh_ptr,  # [4H, H]
    b_hh_ptr,  # [4H], read when HAS_BIAS_HH
    lengths_ptr,  # [B] int64, read when HAS_LENGTHS
    states_h_ptr,  # [T+1, B, H] contiguous, input dtype: h before/after each step
    states_c_ptr,  # [T+1, B, H] contiguous, float32: c before/after each step
    output_ptr,  # [T, B, H] contiguous output
    gates_ptr,  # [T, B, 4H] contiguous output: activated i, f, g, o for backward
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
            _lstm_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, states_c_ptr,
                                 output_ptr, gates_ptr, step_now, batch, hidden, stride_whn, stride_whk, stride_bhh,
                                 o_b, m_b, o_h, REVERSE, HAS_BIAS_HH, HAS_LENGTHS,
                                 DOT_PRECISION, BLOCK_K)
            wait_for_batch_tile(barrier_ptr + tl.program_id(0), (index + 1) * tl.num_programs(1))
    elif PERSISTENT:
        # Rows of a batch tile depend only on each other, so one program runs all their steps: the h a step writes
        # is read back by the same program after the barrier, and no other program ever waits on it.
        for index in range(0, steps):
            step_now = step_at(index, steps, REVERSE)
            for h0 in range(0, hidden, BLOCK_H):
                _lstm_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, states_c_ptr,
                                     output_ptr, gates_ptr, step_now, batch, hidden, stride_whn, stride_whk, stride_bhh,
                                     o_b, m_b, h0 + tl.arange(0, BLOCK_H), REVERSE, HAS_BIAS_HH, HAS_LENGTHS,
                                     DOT_PRECISION, BLOCK_K)
            tl.debug_barrier()
    else:
        _lstm_layer_fwd_tile(input_gates_ptr, w_hh_ptr, b_hh_ptr, lengths_ptr, states_h_ptr, states_c_ptr, output_ptr,
                             gates_ptr, tl.cast(step, tl.int64), batch, hidden, stride_whn, stride_whk, stride_bhh, o_b,
                             m_b, tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), REVERSE, HAS_BIAS_HH, HAS_LENGTHS,
                             DOT_PRECISION, BLOCK_K)


@triton.jit
def _lstm_layer_bwd_tile(
    grad_output_ptr, w_hh_ptr, lengths_ptr, states_c_ptr, gates_ptr, grad_gates_ptr, grad_h_ptr, grad_c_ptr,
    step,  # int64 scalar: the time step this tile computes
    has_next,  # whether a step follows this one in forward order (its dgates are written)
    batch, hidden, stride_gob, stride_got, stride_goh, stride_whn, stride_whk,
    o_b, m_b,  # [BB] batch rows of the tile and their validity
    o_h,  # [BH] hidden units of the tile
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One [BB, BH] tile of one backward step: reads the next step's dgates of the tile's rows, writes this step's."""
    m_h = o_h < hidden
    m_bh = m_b[:, None] & m_h[None, :]
    state_size = batch * hidden
    o_state = o_b[:, None] * hidden + o_h[None, :]  # [BB, BH]
    if HAS_LENGTHS:
        b_length = tl.load(lengths_ptr + o_b, mask=m_b, other=0)
    b_dh = tl.load(grad_h_ptr + o_state, mask=m_bh, other=0.0)
    if has_next:
        # The step after this one (in forward order) passed h on through its gates: dh = dgates_next @ W_hh.
        step_next = step + 1 - 2 * REVERSE
        p_dgates_next = grad_gates_ptr + step_next * batch * 4 * hidden
        b_rec = tl.zeros_like(b_dh)
        for k0 in range(0, 4 * hidden, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < 4 * hidden
            b_dg = tl.load(p_dgates_next + o_b[:, None] * (4 * hidden) + o_k[None, :],
                           mask=m_b[:, None] & m_k[None, :], other=0.0)  # [BB, BK]
            b_w = tl.load(w_hh_ptr + o_k[:, None] * stride_whn + o_h[None, :] * stride_whk,
                          mask=m_k[:, None] & m_h[None, :], other=0.0)  # [BK, BH]
            b_rec = tl.dot(b_dg, b_w, b_rec, input_precision=DOT_PRECISION)
        if HAS_LENGTHS:
            b_dh = tl.where((step_next < b_length)[:, None], b_rec, b_dh)
        else:
            b_dh = b_rec
    # The state after this step reaches the step before through the carried gradient, whatever its validity.
    tl.store(grad_h_ptr + o_state, b_dh, mask=m_bh)
    b_dc = tl.load(grad_c_ptr + o_state, mask=m_bh, other=0.0)
    b_dout = tl.load(grad_output_ptr + step * stride_got + o_b[:, None] * stride_gob + o_h[None, :] * stride_goh,
                     mask=m_bh, other=0.0).to(tl.float32)
    p_gates = gates_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    b_i = tl.load(p_gates, mask=m_bh, other=0.0).to(tl.float32)
    b_f = tl.load(p_gates + hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_g = tl.load(p_gates + 2 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_o = tl.load(p_gates + 3 * hidden, mask=m_bh, other=0.0).to(tl.float32)
    b_c_before = tl.load(states_c_ptr + (step + REVERSE) * state_size + o_state, mask=m_bh, other=0.0)
    b_c_after = tl.load(states_c_ptr + (step + 1 - REVERSE) * state_size + o_state, mask=m_bh, other=0.0)
    d_i, d_f, d_g, d_o, d_c_before = lstm_pointwise_backward(b_dh + b_dout, b_dc, b_i, b_f, b_g, b_o, b_c_before,
                                                             b_c_after)
    if HAS_LENGTHS:
        b_valid = (step < b_length)[:, None]
        d_i = tl.where(b_valid, d_i, 0.0)
        d_f = tl.where(b_valid, d_f, 0.0)
        d_g = tl.where(b_valid, d_g, 0.0)
        d_o = tl.where(b_valid, d_o, 0.0)
        d_c_before = tl.where(b_valid, d_c_before, b_dc)
    tl.store(grad_c_ptr + o_state, d_c_before, mask=m_bh)
    p_grad_gates = grad_gates_ptr + step * batch * 4 * hidden + o_b[:, None] * (4 * hidden) + o_h[None, :]
    tl.store(p_grad_gates, d_i.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + hidden, d_f.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + 2 * hidden, d_g.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)
    tl.store(p_grad_gates + 3 * hidden, d_o.to(grad_gates_ptr.dtype.element_ty), mask=m_bh)


@triton.jit(do_not_specialize=["step", "steps"])
def _lstm_layer_bwd_kernel(
    grad_output_ptr,  # [T, B, H]
    w_hh_ptr,  # [4H, H]
    lengths_ptr,  # [B] int64, read when HAS_LENGTHS
    states_c_ptr,  # [T+1, B, H] contiguous float32, from forward
    gates_ptr,  # [T, B, 4H] contiguous, activated gates from forward
    grad_gates_ptr,  # [T, B, 4H] contiguous output: gradient of the pre-activation gates (0 past a row's end)
    grad_h_ptr,  # [B, H] contiguous float32, in/out: gradient of h after the step processed last, not yet
                 # including the recurrent term of that step (added here from its dgates)
    grad_c_ptr,  # [B, H] contiguous float32, in/out: gradient of c after the step, then before it
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
            _lstm_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_c_ptr, gates_ptr, grad_gates_ptr,
                                 grad_h_ptr, grad_c_ptr, step_now, index > 0, batch, hidden, stride_gob, stride_got,
                                 stride_goh, stride_whn, stride_whk, o_b, m_b, o_h, REVERSE,
                                 HAS_LENGTHS, DOT_PRECISION, BLOCK_K)
            wait_for_batch_tile(barrier_ptr + tl.program_id(0), (index + 1) * tl.num_programs(1))
    elif PERSISTENT:
        # As the forward, in reverse order: the dgates a step writes are read back (all 4H of them) by the same
        # program after the barrier.
        for index in range(0, steps):
            step_now = step_at(index, steps, 1 - REVERSE)
            for h0 in range(0, hidden, BLOCK_H):
                _lstm_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_c_ptr, gates_ptr, grad_gates_ptr,
                                     grad_h_ptr, grad_c_ptr, step_now, index > 0, batch, hidden, stride_gob, stride_got,
                                     stride_goh, stride_whn, stride_whk, o_b, m_b, h0 + tl.arange(0, BLOCK_H), REVERSE,
                                     HAS_LENGTHS, DOT_PRECISION, BLOCK_K)
            tl.debug_barrier()
    else:
        _lstm_layer_bwd_tile(grad_output_ptr, w_hh_ptr, lengths_ptr, states_c_ptr, gates_ptr, grad_gates_ptr,
                             grad_h_ptr, grad_c_ptr, tl.cast(step, tl.int64), HAS_NEXT, batch, hidden, stride_gob,
                             stride_got, stride_goh, stride_whn, stride_whk, o_b, m_b,
                             tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), REVERSE, HAS_LENGTHS, DOT_PRECISION,
                             BLOCK_K)


@triton_op("s2s_fast::triton_lstm_layer_fwd", mutates_args={})
def lstm_layer_fwd(input: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor, weight_ih: torch.Tensor,
                   weight_hh: torch.Tensor, bias_ih: Optional[torch.Tensor], bias_hh: Optional[torch.Tensor],
                   lengths: Optional[torch.Tensor], reverse: bool, persistent: bool, graph: bool = False,
                   spread: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor]:
    """Shapes as lstm_layer; returns (output [T, B, H], hy, cy [B, H], and for backward: states_h [T+1, B, H],
    states_c [T+1, B, H] float32, gates [T, B, 4H])."""
    steps, batch, _ = input.shape
    hidden = hx.shape[1]
    input_gates = F.linear(input, weight_ih, bias_ih).contiguous()  # [T, B, 4H], one GEMM for all steps
    states_h = torch.empty(steps + 1, batch, hidden, device=input.device, dtype=input.dtype)
    states_c = torch.empty(steps + 1, batch, hidden, device=input.device, dtype=torch.float32)
    # Negative indices instead of T: indexing with a symbolic size would pin it under torch.compile.
    initial, final = (-1, 0) if reverse else (0, -1)
    states_h[initial] = hx
    states_c[initial] = cx
    output = torch.empty(steps, batch, hidden, device=input.device, dtype=input.dtype)
    gates = torch.empty(steps, batch, 4 * hidden, device=input.device, dtype=input.dtype)
    tensors = dict(input_gates=input_gates, weight_hh=weight_hh, bias_hh=bias_hh, lengths=lengths, states_h=states_h,
                   states_c=states_c, output=output, gates=gates)
    run_rnn_layer("lstm_layer_fwd", wrap_triton(_lstm_layer_fwd_kernel), tensors, ("states_c", "output", "gates"),
                  reverse=reverse, persistent=persistent, spread=spread, graph=graph, backward=False,
                  written=("states_h", "states_c", "output", "gates"), fresh=("output", "gates"))
    return output, states_h[final].clone(), states_c[final].to(input.dtype, copy=True), states_h, states_c, gates


@triton_op("s2s_fast::triton_lstm_layer_bwd", mutates_args={})
def lstm_layer_bwd(grad_output: torch.Tensor, grad_hy: torch.Tensor, grad_cy: torch.Tensor, input: torch.Tensor,
                   weight_ih: torch.Tensor, weight_hh: torch.Tensor, lengths: Optional[torch.Tensor], reverse: bool,
                   persistent: bool, states_h: torch.Tensor, states_c: torch.Tensor, gates: torch.Tensor,
                   graph: bool = False, spread: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                       torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (input, hx, cx, weight_ih, weight_hh, bias) from those of (output, hy, cy); bias is either's."""
    steps, batch, input_size = input.shape
    hidden = grad_hy.shape[1]
    grad_gates = torch.empty(steps, batch, 4 * hidden, device=input.device, dtype=input.dtype)
    # The kernels update these in place: fresh contiguous float32 copies, never the incoming gradients.
    grad_h = grad_hy.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    grad_c = grad_cy.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    tensors = dict(grad_output=grad_output, weight_hh=weight_hh, lengths=lengths, states_c=states_c, gates=gates,
                   grad_gates=grad_gates, grad_h=grad_h, grad_c=grad_c)
    run_rnn_layer("lstm_layer_bwd", wrap_triton(_lstm_layer_bwd_kernel), tensors,
                  ("states_c", "gates", "grad_gates", "grad_h", "grad_c"), reverse=reverse, persistent=persistent,
                  spread=spread, graph=graph, backward=True,
                  written=("grad_gates", "grad_h", "grad_c"), fresh=("grad_gates",))
    first = steps - 1 if reverse else 0  # the step the forward ran first (its gates took hx)
    recurrent = (grad_gates[-1 if reverse else 0] @ weight_hh).to(torch.float32)
    if lengths is not None:
        recurrent = torch.where((lengths > first).unsqueeze(1), recurrent, grad_h)
    flat_grad_gates = grad_gates.reshape(steps * batch, 4 * hidden)
    states_before = states_h[1:] if reverse else states_h[:-1]
    grad_input = (flat_grad_gates @ weight_ih).reshape(steps, batch, input_size)
    grad_w_ih = flat_grad_gates.t() @ input.reshape(steps * batch, input_size)
    grad_w_hh = flat_grad_gates.t() @ states_before.reshape(steps * batch, hidden)
    return (grad_input, recurrent.to(input.dtype), grad_c.to(input.dtype), grad_w_ih, grad_w_hh,
            flat_grad_gates.sum(0))


def _setup_context(ctx, inputs, output):
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, persistent, graph, spread = inputs
    states_h, states_c, gates = output[3:]
    ctx.mark_non_differentiable(states_h, states_c, gates)
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    ctx.reverse = reverse
    ctx.persistent = persistent
    ctx.graph = graph
    ctx.spread = spread
    save_inputs(ctx, inputs, states_h, states_c, gates)


def _backward(ctx, grad_output, grad_hy, grad_cy, *_):
    inputs, (states_h, states_c, gates) = saved_inputs(ctx)
    input, _hx, _cx, weight_ih, weight_hh, _bias_ih, _bias_hh, lengths = inputs[:8]
    grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh, grad_bias = lstm_layer_bwd(
        grad_output, grad_hy, grad_cy, input, weight_ih, weight_hh, lengths, ctx.reverse, ctx.persistent, states_h,
        states_c, gates, ctx.graph, ctx.spread)
    return ((grad_input, grad_hx, grad_cx, grad_w_ih, grad_w_hh) + bias_grads(grad_bias, *ctx.has_bias)
            + (None, None, None, None, None))


lstm_layer_fwd.register_autograd(with_double_backward("lstm_layer", 9, _backward), setup_context=_setup_context)


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None, persistent=None, graph=None, spread=None):
    """One fused LSTM layer, one direction; arguments and results as s2s_fast.functional.lstm_layer.

    Args:
        input: [T, B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        lengths: int64 [B] in [0, T] on the input's device, or None. reverse: run each row backwards.
        weight_hr: must be None (the kernels have no projection; see limit).
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
        (output [T, B, H], hy [B, H], cy [B, H]).
    """
    if weight_hr is not None:
        raise ValueError(PROJECTION_LIMIT)
    persistent, graph, spread = layer_schedule(4, input, hx, persistent, graph, spread)
    output, hy, cy, *_ = lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                                        persistent, graph, spread)
    return output, hy, cy


def lstm_layer_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
                     weight_hr=None):
    """None when the kernels serve this call, else the limit it hits."""
    if weight_hr is not None:
        return PROJECTION_LIMIT
    if input.shape[0] == 0:
        return "empty tensors (a zero-size dimension) are not served; the reference backend serves them"
    return rnn_limit(input[0], hx, weight_ih, weight_hh)
