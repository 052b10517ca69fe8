"""Pieces shared by the Triton kernels: float32 activations, dot precision, block sizes, launch helpers."""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl


@triton.jit
def tanh(x, FAST: tl.constexpr):
    """tanh of a float32 block; FAST uses the GPU's one-instruction approximation (max rel. error ~2^-11)."""
    if FAST:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        # exp of a non-positive argument cannot overflow; near 0 the odd series keeps the error relative.
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        x2 = x * x
        series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))))
        return tl.where(tl.abs(x) < 0.2, series, tl.where(x < 0.0, -t, t))


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


def interpreting() -> bool:
    """Whether this package's kernels were defined under TRITON_INTERPRET=1 (they then run through numpy)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(sigmoid, InterpretedFunction)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for ``dtype``: float32 follows torch's TF32 switch for matmuls, like the reference."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def block_size(size: int, low: int, high: int) -> int:
    """The power of two covering ``size``, clamped to [low, high]."""
    return max(low, min(high, triton.next_power_of_2(max(int(size), 1))))


def device_guard(tensor: torch.Tensor):
    """Launch on the tensor's GPU even when another device is current."""
    return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else contextlib.nullcontext()
