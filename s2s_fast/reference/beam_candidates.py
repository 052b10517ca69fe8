"""beam_candidates on the reference backend: torch's log_softmax, the scores added in float64, topk."""

from __future__ import annotations

import torch

from .log_softmax_max import finite_log_softmax


def beam_candidates(logits, scores, count, banned=None):
    """Each input's best ``count`` one-token extensions of its beams; see s2s_fast.functional.beam_candidates."""
    log_probs = finite_log_softmax(logits).double()  # [B*K, V]
    if banned is not None:
        log_probs[:, banned] = float("-inf")
    totals = (scores.reshape(-1, 1) + log_probs).view(scores.shape[0], scores.shape[1] * log_probs.shape[1])
    top_scores, top_index = totals.topk(count, dim=1)
    return top_scores, top_index
