"""Persistent LSTM layer on the cuda backend (kernels in csrc/lstm_layer.cu, operators bound in csrc/ops.cpp).

One cooperative launch runs all T steps of one direction with W_hh held in shared memory across the
multiprocessors; the input projection of all steps is one cuBLAS GEMM before it. The backward is persistent too
(W_hh columns on chip, gate gradients of all steps kept) and leaves the input, weight and bias gradients to GEMMs
over all steps here.

Served sizes (``lstm_layer_limit``, from the same plan the launch makes): J = ceil(H / SMs) hidden units per block
with J * B <= 256, and per block 4J rows of W_hh plus the [B, H] vector of the step (backward: J columns of W_hh plus
the [B, 4H] gate gradients) in the opt-in shared memory of one block. Largest batch served on an H100 (132 SMs,
227 KiB), inference / training:

    H              256        512       768       1024      1536     2048
    fp16, bf16     128 / 64   64 / 48   32 / 24   32 / 16   16 / -   - / -
    fp32           128 / 48   64 / 24   32 / 8    24 / -    - / -    - / -

Larger calls fall back (backend="auto") or fail with that reason (backend="cuda").
"""

from __future__ import annotations

import torch

from . import compiled
from .compiled import dtype_limit, needs_grad

# Threads per block of the persistent kernels; each owns one (hidden unit, batch row), so B <= 256.
MAX_BATCH = 256
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
    ctx.save_for_backward(input, cx, weight_ih, weight_hh, lengths, activations, cell_states, hidden_prev)


def _backward(ctx, grad_output, grad_hy, grad_cy, *_grad_saved):
    if not ctx.saved_state:
        raise RuntimeError("s2s_fast::cuda_lstm_layer_fwd ran with save_for_backward=False, so it kept nothing for the "
                           "backward; call it with save_for_backward=True when gradients are needed")
    input, cx, weight_ih, weight_hh, lengths, activations, cell_states, hidden_prev = ctx.saved_tensors
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
    torch.library.register_autograd("s2s_fast::cuda_lstm_layer_fwd", _backward, setup_context=_setup_context)
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


def persistent_shared_bytes(element_size: int, batch: int, hidden: int, backward: bool, multiprocessors: int):
    """Shared memory per block the persistent kernel needs, or None where J * B > 256 (J = ceil(H / SMs)).

    Mirrors layout_for and plan_for in csrc/lstm_layer.cu in plain arithmetic, so that torch.compile traces it; the
    launch makes the same plan again and refuses, saying so, if the two ever disagree. float16/bfloat16 products run
    on tensor cores in tiles of 16 rows x 16 deep (held rows a multiple of 8, each padded by 16 bytes), float32 ones
    on CUDA cores in tiles of 4 rows.
    """
    units = -(-hidden // multiprocessors)
    if units * batch > MAX_BATCH:
        return None
    tensor_cores = element_size == 2
    rows_per_item = 16 if tensor_cores else 4
    row_multiple = 8 if tensor_cores else 4
    rows = -(-(units if backward else 4 * units) // row_multiple) * row_multiple
    depth = 16 if tensor_cores else 16 // element_size
    length = -(-(4 * hidden if backward else hidden) // depth) * depth
    stride = length + 8 if tensor_cores else length
    batch_pad = -(-batch // 8) * 8
    items = -(-rows // rows_per_item) * (batch_pad // 8)
    warps_per_item = 1
    while 2 * warps_per_item * items <= 8:
        warps_per_item *= 2
    return (rows + batch_pad) * stride * element_size + warps_per_item * rows * batch_pad * 4


def lstm_layer_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None,
                     reverse=False, weight_hr=None) -> str | None:
    """None when the persistent kernel serves the call (forward, and backward when autograd records it)."""
    if weight_hr is not None:
        return PROJECTION_LIMIT
    reason = dtype_limit(input)
    if reason is not None:
        return reason
    steps, batch = input.shape[:2]
    hidden = weight_hh.shape[1]
    if batch > MAX_BATCH:
        return f"the persistent LSTM kernel serves batches of at most {MAX_BATCH} rows, got {batch}"
    if steps == 0 or batch == 0 or hidden == 0:
        return None
    if compiled.MISSING_REASON is not None:
        return compiled.MISSING_REASON
    device_reason = compiled.wrong_device_reason(input.device)
    if device_reason is not None:
        return device_reason
    multiprocessors, available = compiled.device_limits(input.device)
    backward = needs_grad(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    for direction in (False, True) if backward else (False,):
        needed = persistent_shared_bytes(input.element_size(), batch, hidden, direction, multiprocessors)
        if needed is None or needed > available:
            what = "backward" if direction else "forward"
            return (f"the persistent LSTM {what} kernel does not serve batch {batch} x hidden {hidden} in "
                    f"{input.dtype} on this GPU: ceil(H / multiprocessors) units x B must be at most {MAX_BATCH} "
                    f"and a block's slice of W_hh plus the per-step vector ({needed} bytes) must fit its shared "
                    f"memory ({available} bytes)")
    return None
