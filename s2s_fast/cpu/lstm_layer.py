"""Fused LSTM layer on the cpu backend (step kernels in csrc/cpu/lstm_layer_kernels.h, operators and matrix products
in csrc/cpu/lstm_layer.cpp).

One direction of one layer. The forward computes the input part of every step's gates in one matrix product, then
per step h @ weight_hh^T and one vectorised pass for the gates, c and h; for the backward it keeps the activated
gates and c of every step ([T, B, 5H]) besides its inputs and output. The backward runs the steps in reverse (one
pass and one product with weight_hh per step), then the input and both weight gradients in one product each over all
steps, where torch's CPU RNN backward and the reference's loop take many smaller ones. With per-row lengths, each
step runs its running rows only, longest first (csrc/cpu/rnn_layer_binding.h): the padded positions cost no product,
and the input at them is never read.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .compiled import dtype_limit, refuse_unsaved


def lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save):
    """-> (output [T, B, H], hy [B, H], cy [B, H], gates [T, B, 4H], cells [T, B, H]); gates and cells have T = 0
    unless ``save``."""
    return torch.ops.s2s_fast.cpu_lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                                 reverse, save)


def lstm_layer_bwd(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, lengths, reverse, output,
                   gates, cells):
    """-> (grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias [4H], the gradient of either
    bias)."""
    return torch.ops.s2s_fast.cpu_lstm_layer_bwd(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh,
                                                 lengths, reverse, output, gates, cells)


def _forward_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save):
    steps, batch = input.shape[:2]
    hidden = hx.shape[1]
    kept = steps if save else 0
    return (input.new_empty(steps, batch, hidden), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            input.new_empty(kept, batch, 4 * hidden), input.new_empty(kept, batch, hidden))


def _backward_fake(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, lengths, reverse, output,
                   gates, cells):
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            weight_ih.new_empty(weight_ih.shape), weight_hh.new_empty(weight_hh.shape),
            weight_hh.new_empty(weight_hh.shape[0]))


def _setup_context(ctx, inputs, output):
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save = inputs
    # Nobody differentiates the saved gates and cells (nor, often, hy and cy): no zero tensors for their gradients.
    ctx.set_materialize_grads(False)
    ctx.saved = save
    ctx.reverse = reverse
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    save_inputs(ctx, inputs, output[0], output[3], output[4])


def _backward(ctx, grad_output, grad_hy, grad_cy, _grad_gates, _grad_cells):
    inputs, (output, gates, cells) = saved_inputs(ctx)
    refuse_unsaved("lstm_layer", ctx.saved)
    input, hx, cx, weight_ih, weight_hh, _bias_ih, _bias_hh, lengths = inputs[:8]
    grad_output, grad_hy, grad_cy = (grad if grad is not None else torch.zeros_like(like)
                                     for grad, like in ((grad_output, output), (grad_hy, hx), (grad_cy, cx)))
    grads = lstm_layer_bwd(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, lengths, ctx.reverse,
                           output, gates, cells)
    grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias = grads
    grad_bias_ih = grad_bias if ctx.has_bias[0] else None
    grad_bias_hh = grad_bias if ctx.has_bias[1] else None
    return grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh, None, None, None


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cpu_lstm_layer_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cpu_lstm_layer_fwd",
                                    with_double_backward("lstm_layer", 9, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cpu_lstm_layer_bwd", _backward_fake)


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None):
    """One LSTM layer direction on CPU tensors; see s2s_fast.functional.lstm_layer.

    Args:
        input: [T, B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        lengths: int64 [B] in [0, T] or None. reverse: run each row from its last valid step.
        weight_hr: must be None (lstm_layer_limit refuses projections).

    Returns:
        (output [T, B, H], hy [B, H], cy [B, H]).
    """
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh))
    output, hy, cy, _gates, _cells = lstm_layer_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths,
                                                    reverse, save)
    return output, hy, cy


def lstm_layer_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
                     weight_hr=None) -> str | None:
    """None when lstm_layer serves the call: float32/float64 without a projection."""
    if weight_hr is not None:
        return "the cpu backend's lstm_layer has no projection (weight_hr); the aten and reference backends serve it"
    return dtype_limit(input)
