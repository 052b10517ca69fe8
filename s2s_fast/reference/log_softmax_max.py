"""log_softmax_max on the reference backend: torch's log_softmax, then the maximum of each row."""

from __future__ import annotations

import torch


def finite_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dimension in at least float32 (low-precision logits are upcast, float64 stays);
    a NaN or +inf log-probability (a row holding NaN or +inf, from a model whose weights are not finite, or a row of
    only -inf) becomes -inf: a token no decoder takes."""
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    # neginf too: nan_to_num's default would make -inf the dtype's lowest finite value, a token one could take.
    return log_probs.nan_to_num(nan=float("-inf"), posinf=float("-inf"), neginf=float("-inf"))


def log_softmax_max(logits, banned=None):
    """Each row's most probable token and its log-probability; see s2s_fast.functional.log_softmax_max."""
    log_probs = finite_log_softmax(logits)
    if banned is not None:
        log_probs[:, banned] = float("-inf")
    best, token = log_probs.max(dim=-1)
    return best, token
