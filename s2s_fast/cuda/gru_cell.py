"""GRU cell step on the cuda backend (kernels in csrc/gru_cell.cu, operators bound in csrc/ops.cpp).

``gru_cell_fwd`` takes input @ W_ih^T and hx @ W_hh^T from cuBLAS and fuses biases and gate math, saving r, z, n and
the hidden part of n (fp32); ``gru_cell_bwd`` returns the gradients of both gate pre-activations, which become input,
state, weight and bias gradients through cuBLAS GEMMs here. The GRU layer runs this cell in the reference time loop.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .compiled import dtype_limit, needs_grad


def gru_cell_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations):
    """-> (hy [B, H], activations [B, 4H] fp32 or [0])."""
    return torch.ops.s2s_fast.cuda_gru_cell_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations)


def gru_cell_bwd(grad_hy, hx, activations):
    """-> (grad_input_gates [B, 3H], grad_hidden_gates [B, 3H], grad_hx_direct [B, H])."""
    return torch.ops.s2s_fast.cuda_gru_cell_bwd(grad_hy, hx, activations)


def _forward_fake(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, save_activations):
    batch, hidden = input.shape[0], weight_hh.shape[1]
    activations_shape = (batch, 4 * hidden) if save_activations else (0,)
    return hx.new_empty(batch, hidden), input.new_empty(activations_shape, dtype=torch.float32)


def _backward_fake(grad_hy, hx, activations):
    batch, hidden = hx.shape
    return hx.new_empty(batch, 3 * hidden), hx.new_empty(batch, 3 * hidden), hx.new_empty(batch, hidden)


def _setup_context(ctx, inputs, output):
    save_activations = inputs[-1]
    activations = output[1]
    ctx.mark_non_differentiable(activations)
    ctx.saved_activations = save_activations
    save_inputs(ctx, inputs, activations)


def _backward(ctx, grad_hy, _grad_activations):
    inputs, (activations,) = saved_inputs(ctx)
    if not ctx.saved_activations:
        raise RuntimeError("s2s_fast::cuda_gru_cell_fwd ran with save_activations=False, so it kept nothing for the "
                           "backward; call it with save_activations=True when gradients are needed")
    input, hx, weight_ih, weight_hh = inputs[:4]
    grad_input_gates, grad_hidden_gates, grad_hx_direct = gru_cell_bwd(grad_hy, hx, activations)
    needs = ctx.needs_input_grad
    return (grad_input_gates @ weight_ih if needs[0] else None,
            grad_hx_direct + grad_hidden_gates @ weight_hh if needs[1] else None,
            grad_input_gates.t() @ input if needs[2] else None,
            grad_hidden_gates.t() @ hx if needs[3] else None,
            grad_input_gates.sum(0) if needs[4] else None,
            grad_hidden_gates.sum(0) if needs[5] else None,
            None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cuda_gru_cell_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cuda_gru_cell_fwd",
                                    with_double_backward("gru_cell", 6, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cuda_gru_cell_bwd", _backward_fake)


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """One GRU step (gate order r, z, n) on CUDA tensors; see s2s_fast.functional.gru_cell.

    Args:
        input: [B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.

    Returns:
        hy [B, H].
    """
    save = needs_grad(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    hy, _ = gru_cell_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, save)
    return hy


def gru_cell_limit(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None) -> str | None:
    """None when gru_cell serves the call, else the limit it hits."""
    return dtype_limit(input)
