"""Fused GRU layer on the cpu backend (step kernels in csrc/cpu/gru_layer_kernels.h, operators and matrix products in
csrc/cpu/gru_layer.cpp).

One direction of one layer, built as the LSTM layer is (see lstm_layer.py): the input part of every step's gates in
one product, per step h @ weight_hh^T and one vectorised pass; for the backward it keeps r, z, n and h_n + b_hn of
every step ([T, B, 4H]) besides its inputs and output, runs one product with weight_hh per step, then the input and
both weight gradients in one product each over all steps (torch's CPU GRU backward was measured slower than the
reference's loop at H = 512); with per-row lengths, over each step's running rows only.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .compiled import dtype_limit, refuse_unsaved


def gru_layer_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save):
    """-> (output [T, B, H], hy [B, H], gates [T, B, 4H]); gates has T = 0 unless ``save``."""
    return torch.ops.s2s_fast.cpu_gru_layer_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                                                save)


def gru_layer_bwd(grad_output, grad_hy, input, hx, weight_ih, weight_hh, lengths, reverse, output, gates):
    """-> (grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)."""
    return torch.ops.s2s_fast.cpu_gru_layer_bwd(grad_output, grad_hy, input, hx, weight_ih, weight_hh, lengths,
                                                reverse, output, gates)


def _forward_fake(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save):
    steps, batch = input.shape[:2]
    hidden = hx.shape[1]
    return (input.new_empty(steps, batch, hidden), hx.new_empty(hx.shape),
            input.new_empty(steps if save else 0, batch, 4 * hidden))


def _backward_fake(grad_output, grad_hy, input, hx, weight_ih, weight_hh, lengths, reverse, output, gates):
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), weight_ih.new_empty(weight_ih.shape),
            weight_hh.new_empty(weight_hh.shape), weight_ih.new_empty(weight_ih.shape[0]),
            weight_hh.new_empty(weight_hh.shape[0]))


def _setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save = inputs
    # Nobody differentiates the saved gates (nor, often, hy): no zero tensors for their gradients.
    ctx.set_materialize_grads(False)
    ctx.saved = save
    ctx.reverse = reverse
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    save_inputs(ctx, inputs, output[0], output[2])


def _backward(ctx, grad_output, grad_hy, _grad_gates):
    inputs, (output, gates) = saved_inputs(ctx)
    refuse_unsaved("gru_layer", ctx.saved)
    input, hx, weight_ih, weight_hh, _bias_ih, _bias_hh, lengths = inputs[:7]
    grad_output = grad_output if grad_output is not None else torch.zeros_like(output)
    grad_hy = grad_hy if grad_hy is not None else torch.zeros_like(hx)
    grads = gru_layer_bwd(grad_output, grad_hy, input, hx, weight_ih, weight_hh, lengths, ctx.reverse, output, gates)
    grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = grads
    return (grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih if ctx.has_bias[0] else None,
            grad_bias_hh if ctx.has_bias[1] else None, None, None, None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cpu_gru_layer_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cpu_gru_layer_fwd",
                                    with_double_backward("gru_layer", 8, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cpu_gru_layer_bwd", _backward_fake)


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False):
    """One GRU layer direction on CPU tensors; see s2s_fast.functional.gru_layer.

    Args:
        input: [T, B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.
        lengths: int64 [B] in [0, T] or None. reverse: run each row from its last valid step.

    Returns:
        (output [T, B, H], hy [B, H]).
    """
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, hx, weight_ih, weight_hh, bias_ih, bias_hh))
    output, hy, _gates = gru_layer_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, save)
    return output, hy


def gru_layer_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None,
                    reverse=False) -> str | None:
    """None when gru_layer serves the call: float32 and float64."""
    return dtype_limit(input)
