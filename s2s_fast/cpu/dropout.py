"""Dropout on the cpu backend: the mask made by hashing each element's index with a per-call seed
(csrc/cpu/dropout.h), not drawn from torch's generator element by element: torch's CPU dropout spends about 12 ns an
element on one thread drawing its mask, a large share of a CPU training step of an RNN Seq2Seq model (the embeddings',
the layers' and the attentional vectors' dropout). The seed is drawn from torch's default generator, so
torch.manual_seed repeats a run (and a checkpoint's saved RNG state resumes it); the backward is the same operator on
the gradient with the same seed, so nothing is kept for it but the seed, and it is differentiable again.

The mask is not torch's: the same seed gives other dropped elements than torch.nn.functional.dropout does, with the
same distribution (each element kept with probability 1 - p, independently as far as the hash goes).
"""

from __future__ import annotations

import torch

from .compiled import dtype_limit

# Seeds are drawn in [0, 2^62): a 0-d int64 tensor, so that a compiled graph draws a new one each call.
_SEED_BOUND = 1 << 62


def _fake(input, p, seed):
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    _input, p, seed = inputs
    ctx.p = p
    ctx.save_for_backward(seed)


def _backward(ctx, grad_output):
    (seed,) = ctx.saved_tensors
    return torch.ops.s2s_fast.cpu_dropout(grad_output, ctx.p, seed), None, None


def register() -> None:
    """Attach the fake (meta) implementation and the autograd formula to the C++ operator."""
    torch.library.register_fake("s2s_fast::cpu_dropout", _fake)
    torch.library.register_autograd("s2s_fast::cpu_dropout", _backward, setup_context=_setup_context)


def draw_seed() -> torch.Tensor:
    """A call's seed from torch's default CPU generator."""
    return torch.randint(_SEED_BOUND, (), dtype=torch.int64, device="cpu")  # not torch's default device


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1 / (1 - p); see s2s_fast.functional.dropout, which
    answers the calls outside training and with p = 0 or 1 itself (0 < p < 1 here)."""
    return torch.ops.s2s_fast.cpu_dropout(input, float(p), draw_seed())


def dropout_limit(input, p=0.5, training=True) -> str | None:
    """None when dropout serves the call: float32 and float64."""
    return dtype_limit(input)
