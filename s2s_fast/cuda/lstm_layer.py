"""Persistent LSTM layer on the cuda backend (kernels in csrc/lstm_layer.cu, operators bound in csrc/ops.cpp).

One cooperative launch runs all T steps of one direction with W_hh held in shared memory across the
multiprocessors, the per-step vector streamed through it; the input projection of all steps is one cuBLAS GEMM
before it. The backward is persistent too (W_hh columns on chip, gate gradients of all steps kept) and leaves the
input, weight and bias gradients to GEMMs over all steps here.

Served sizes (``lstm_layer_limit``, from the plan the launch makes): J = ceil(H / SMs) hidden units per block with
J * B <= 1024 (256 threads of up to 4 pairs), and per block its 4J rows of W_hh (backward: J columns) plus two chunk
buffers of the per-step vector (or the whole vector, when short) in the opt-in shared memory of one block. Largest
batch served on an H100 or H200 (132 SMs, 227 KiB; the emulation's planner, 2026-12-03), inference / training:

    H              256        512        768        1024       1536      2048
    fp16, bf16     512 / 512  256 / 256  170 / 170  128 / 128  85 / 85   - / -
    fp32           512 / 512  256 / 256  170 / 170  128 / 128  - / -     - / -

Larger calls fall back (backend="auto") or fail with that reason (backend="cuda").
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from . import compiled
from .compiled import dtype_limit, needs_grad

PROJECTION_LIMIT = ("the cuda LSTM layer has no projection (weight_hr, proj_size > 0); the aten and reference "
                    "backends serve it")


def lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save_for_backward):
    """-> (output [T, B, H], hy, cy, activations [T, B, 4H] fp32, cell_states [T, B, H] fp32, hidden_prev [T, B, H]);
    the last three are [0] when save_for_backward is False."""
    return torch.ops.s2s_fast.cuda_lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                                  reverse, save_for_backward)


def lstm_layer_bwd(grad_output, grad_hy, grad_cy, weight_hh, lengths, cx, activations, cell_states, reverse):
    """-> (grad_gates [T, B, 4H] of the pre-activation gates, grad_hx [B, H], grad_cx [B, H])."""
    return torch.ops.s2s_fast.cuda_lstm_layer_bwd(grad_output, grad_hy, grad_cy, weight_hh, lengths, cx, activations,
                                                  cell_states, reverse)


def _forward_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save_for_backward):
    steps, batch = input.shape[:2]
    hidden = weight_hh.shape[1]

    def saved(*shape, dtype):
        return hx.new_empty(shape if save_for_backward else (0,), dtype=dtype)

    return (hx.new_empty(steps, batch, hidden), hx.new_empty(batch, hidden), hx.new_empty(batch, hidden),
            saved(steps, batch, 4 * hidden, dtype=torch.float32), saved(steps, batch, hidden, dtype=torch.float32),
            saved(steps, batch, hidden, dtype=hx.dtype))


def _backward_fake(grad_output, grad_hy, grad_cy, weight_hh, lengths, cx, activations, cell_states, reverse):
    steps, batch, hidden = grad_output.shape
    return (grad_output.new_empty(steps, batch, 4 * hidden), grad_output.new_empty(batch, hidden),
            grad_output.new_empty(batch, hidden))


def _setup_context(ctx, inputs, output):
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save_for_backward = inputs
    activations, cell_states, hidden_prev = output[3:]
    ctx.mark_non_differentiable(activations, cell_states, hidden_prev)
    ctx.reverse = reverse
    ctx.saved_state = save_for_backward
    save_inputs(ctx, inputs, activations, cell_states, hidden_prev)


def _backward(ctx, grad_output, grad_hy, grad_cy, *_grad_saved):
    inputs, (activations, cell_states, hidden_prev) = saved_inputs(ctx)
    if not ctx.saved_state:
        raise RuntimeError("s2s_fast::cuda_lstm_layer_fwd ran with save_for_backward=False, so it kept nothing for the "
                           "backward; call it with save_for_backward=True when gradients are needed")
    input, _hx, cx, weight_ih, weight_hh, _bias_ih, _bias_hh, lengths = inputs[:8]
    grad_gates, grad_hx, grad_cx = lstm_layer_bwd(grad_output, grad_hy, grad_cy, weight_hh, lengths, cx,
                                                  activations, cell_states, ctx.reverse)
    needs = ctx.needs_input_grad
    gates = grad_gates.reshape(-1, grad_gates.shape[-1])  # [T * B, 4H]
    grad_bias = grad_gates.sum((0, 1)) if needs[5] or needs[6] else None
    return (grad_gates @ weight_ih if needs[0] else None,
            grad_hx if needs[1] else None,
            grad_cx if needs[2] else None,
            gates.t() @ input.reshape(-1, input.shape[-1]) if needs[3] else None,
            gates.t() @ hidden_prev.reshape(-1, hidden_prev.shape[-1]) if needs[4] else None,
            grad_bias if needs[5] else None,
            grad_bias if needs[6] else None,
            None, None, None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cuda_lstm_layer_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cuda_lstm_layer_fwd",
                                    with_double_backward("lstm_layer", 9, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cuda_lstm_layer_bwd", _backward_fake)


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None):
    """One LSTM layer direction over a padded time-major sequence; see s2s_fast.functional.lstm_layer.

    Args:
        input: [T, B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        lengths: int64 [B] on the input's device, or None. reverse: run each row from its last valid step.
        weight_hr: must be None (the kernel has no projection; see lstm_layer_limit).

    Returns:
        (output [T, B, H], hy [B, H], cy [B, H]).
    """
    if weight_hr is not None:
        raise ValueError(PROJECTION_LIMIT)
    save = needs_grad(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    output, hy, cy, *_ = lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                                        save)
    return output, hy, cy


@torch.compiler.assume_constant_result
def persistent_plan(dtype: torch.dtype, batch: int, hidden: int, backward: bool, device_index: int) -> tuple:
    """(units per block, blocks, shared bytes, chunk) the persistent kernel launches this size with on the kernels'
    device, from the extension's own planner (cached there); blocks == 0 where the size is not served. A constant to
    torch.compile, which calls it while tracing."""
    return tuple(torch.ops.s2s_fast.cuda_lstm_layer_plan(dtype, batch, hidden, backward, device_index))


def lstm_layer_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None,
                     reverse=False, weight_hr=None) -> str | None:
    """None when the persistent kernel serves the call (forward, and backward when autograd records it)."""
    if weight_hr is not None:
        return PROJECTION_LIMIT
    reason = dtype_limit(input) or compiled.MISSING_REASON
    if reason is not None:
        return reason
    steps, batch = input.shape[:2]
    hidden = weight_hh.shape[1]
    max_pairs = compiled.KERNEL_LIMITS["lstm_layer_max_pairs"]
    if batch > max_pairs:
        return f"the persistent LSTM kernel serves batches of at most {max_pairs} rows, got {batch}"
    if hidden == 0 or input.shape[2] == 0:
        # The kernels' planner has no block for H = 0, and the backward's input product no shape for I = 0.
        return "an input or hidden size of 0 is not served; the reference backend serves it"
    if steps == 0 or batch == 0:
        return None
    device_reason = compiled.wrong_device_reason(input.device)
    if device_reason is not None:
        return device_reason
    backward = needs_grad(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    for direction in (False, True) if backward else (False,):
        if persistent_plan(input.dtype, batch, hidden, direction, input.device.index or 0)[1] == 0:
            what = "backward" if direction else "forward"
            multiprocessors, shared = compiled.device_limits(input.device)
            return (f"the persistent LSTM {what} kernel does not serve batch {batch} x hidden {hidden} in "
                    f"{input.dtype} on this GPU: ceil(H / multiprocessors) = {-(-hidden // multiprocessors)} units x "
                    f"B must be at most {max_pairs}, and a block's rows of W_hh plus its chunk buffers of the "
                    f"per-step vector must fit its {shared} bytes of shared memory")
    return None
