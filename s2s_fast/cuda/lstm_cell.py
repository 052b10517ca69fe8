"""LSTM cell step on the cuda backend (kernels in csrc/lstm_cell.cu, operators bound in csrc/ops.cpp).

Two forward operators compute the same step: ``lstm_cell_fwd`` takes the gates from cuBLAS (input @ W_ih^T +
hx @ W_hh^T, tensor cores) and fuses the pointwise gate math; ``lstm_cell_fused_fwd`` computes the gates inside the
kernel too (fp32 FMA, one launch) and serves up to KERNEL_LIMITS["lstm_cell_fused_max_batch"] rows, where a step is bound by launches and
weight bytes rather than arithmetic. ``lstm_cell`` picks by batch size; ``s2s-fast bench`` times both (providers "cuda: fused gates" and
"cuda: cuBLAS gates").
Both save the activated gates (fp32) for ``lstm_cell_bwd``, whose gate gradients become input, state, weight and bias
gradients through cuBLAS GEMMs here.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from . import compiled
from .compiled import dtype_limit, needs_grad


def lstm_cell_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations):
    """cuBLAS gates + fused pointwise kernel -> (hy [B, H], cy [B, H], activations [B, 4H] fp32 or [0])."""
    return torch.ops.s2s_fast.cuda_lstm_cell_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                                 save_activations)


def lstm_cell_fused_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations):
    """One kernel for the whole step, B <= KERNEL_LIMITS["lstm_cell_fused_max_batch"]; same outputs as lstm_cell_fwd."""
    return torch.ops.s2s_fast.cuda_lstm_cell_fused_fwd(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                                       save_activations)


def lstm_cell_bwd(grad_hy, grad_cy, cx, activations):
    """-> (grad_gates [B, 4H] of the pre-activation gates, grad_cx [B, H])."""
    return torch.ops.s2s_fast.cuda_lstm_cell_bwd(grad_hy, grad_cy, cx, activations)


def _forward_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations):
    batch, hidden = input.shape[0], weight_hh.shape[1]
    activations_shape = (batch, 4 * hidden) if save_activations else (0,)
    return (hx.new_empty(batch, hidden), hx.new_empty(batch, hidden),
            input.new_empty(activations_shape, dtype=torch.float32))


def _backward_fake(grad_hy, grad_cy, cx, activations):
    batch, hidden = cx.shape
    return cx.new_empty(batch, 4 * hidden), cx.new_empty(batch, hidden)


def _setup_context(ctx, inputs, output):
    save_activations = inputs[-1]
    activations = output[2]
    ctx.mark_non_differentiable(activations)
    ctx.saved_activations = save_activations
    save_inputs(ctx, inputs, activations)


def _backward(ctx, grad_hy, grad_cy, _grad_activations):
    inputs, (activations,) = saved_inputs(ctx)
    if not ctx.saved_activations:
        raise RuntimeError("s2s_fast::cuda_lstm_cell_fwd ran with save_activations=False, so it kept nothing for the "
                           "backward; call it with save_activations=True when gradients are needed")
    input, hx, cx, weight_ih, weight_hh = inputs[:5]
    grad_gates, grad_cx = lstm_cell_bwd(grad_hy, grad_cy, cx, activations)
    needs = ctx.needs_input_grad
    grad_bias = grad_gates.sum(0) if needs[5] or needs[6] else None
    return (grad_gates @ weight_ih if needs[0] else None,
            grad_gates @ weight_hh if needs[1] else None,
            grad_cx if needs[2] else None,
            grad_gates.t() @ input if needs[3] else None,
            grad_gates.t() @ hx if needs[4] else None,
            grad_bias if needs[5] else None,
            grad_bias if needs[6] else None,
            None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    for name in ("s2s_fast::cuda_lstm_cell_fwd", "s2s_fast::cuda_lstm_cell_fused_fwd"):
        torch.library.register_fake(name, _forward_fake)
        torch.library.register_autograd(name,
                                        with_double_backward("lstm_cell", 7, _backward),
                                        setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cuda_lstm_cell_bwd", _backward_fake)


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, fused=None):
    """One LSTM step (gate order i, f, g, o) on the kernels' device; see s2s_fast.functional.lstm_cell.

    Args:
        input: [B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        fused: the gates computed inside the kernel (True), by cuBLAS (False), or by batch size (None: fused up to
            KERNEL_LIMITS["lstm_cell_fused_max_batch"] rows); both compute the same step.

    Returns:
        (hy [B, H], cy [B, H]).
    """
    save = needs_grad(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
    if fused is None:
        fused = input.shape[0] <= compiled.KERNEL_LIMITS["lstm_cell_fused_max_batch"]
    forward = lstm_cell_fused_fwd if fused else lstm_cell_fwd
    hy, cy, _ = forward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return hy, cy


def fused_gates_limit(input, *_args) -> str | None:
    """None when the fused-gates path serves the batch, else its limit."""
    most = compiled.KERNEL_LIMITS["lstm_cell_fused_max_batch"]
    return None if input.shape[0] <= most else f"the fused-gates kernel serves at most {most} rows"


def lstm_cell_limit(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> str | None:
    """None when lstm_cell serves the call, else the limit it hits."""
    return dtype_limit(input)
