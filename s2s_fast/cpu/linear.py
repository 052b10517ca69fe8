"""Linear on the cpu backend: input @ weight^T + bias with every product, forward and backward, through the cpu
backend's library (csrc/cpu/linear.cpp, csrc/cpu/products.h): oneDNN for float32 on x86 CPUs that are not Intel's,
where torch's own linear (MKL) ran at under half of oneDNN's rate (with AVX-512; without it, at oneDNN's); ATen
elsewhere. Auto tries it first only where that is oneDNN and the call is large enough
(s2s_fast.backends.CPU_ONEDNN_FROM_WORK, CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512 on a CPU without AVX-512).
"""

from __future__ import annotations

import torch

from .compiled import dtype_limit


def _forward_fake(input, weight, bias):
    return input.new_empty(input.shape[0], weight.shape[0])


def _backward_fake(grad_output, input, weight, input_grad, weight_grad, bias_grad):
    return (input.new_empty(input.shape if input_grad else (0,)),
            weight.new_empty(weight.shape if weight_grad else (0,)),
            weight.new_empty(weight.shape[0] if bias_grad else 0))


def _setup_context(ctx, inputs, output):
    input, weight, _bias = inputs
    ctx.save_for_backward(input, weight)


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad
    if torch.is_grad_enabled():
        # A backward that builds a graph (create_graph=True): torch's own products, which autograd differentiates.
        return (grad_output @ weight if need_input else None, grad_output.t() @ input if need_weight else None,
                grad_output.sum(0) if need_bias else None)
    grads = torch.ops.s2s_fast.cpu_linear_bwd(grad_output, input, weight, need_input, need_weight, need_bias)
    return tuple(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad))


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cpu_linear_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cpu_linear_fwd", _backward, setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cpu_linear_bwd", _backward_fake)


def linear(input, weight, bias=None):
    """input @ weight^T + bias on CPU tensors; see s2s_fast.functional.linear.

    Args:
        input: [..., K]. weight: [N, K]. bias: [N] or None.

    Returns:
        [..., N].
    """
    flat = input.flatten(0, -2) if input.dim() > 1 else input.unsqueeze(0)
    return torch.ops.s2s_fast.cpu_linear_fwd(flat, weight, bias).view(*input.shape[:-1], weight.shape[0])


def linear_limit(input, weight, bias=None) -> str | None:
    """None when linear serves the call: float32 and float64."""
    return dtype_limit(input)
