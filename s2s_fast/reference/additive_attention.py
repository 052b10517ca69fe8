"""Reference additive (Bahdanau) attention in pure PyTorch, and the masked softmax every attention here shares.

The additive scores materialise the [B, Tq, Tk, A] tanh tensor, which autograd keeps for backward: this is the
unfused baseline the fused kernels are measured against.
"""

from __future__ import annotations

import torch


def masked_softmax_context(scores, values, mask=None):
    """scores [B, Tq, Tk], values [B, Tk, Dv], mask bool [B, Tk] or None -> (context [B, Tq, Dv], weights).

    Masked keys get weight 0; a row with no valid key gets all-zero weights and a zero context, never NaN.
    """
    if mask is not None:
        keep = mask.unsqueeze(1)  # [B, 1, Tk]
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~keep, 0.0)
    return weights @ values, weights


def with_query_axis(query):
    """query [B, D] or [B, Tq, D] -> ([B, Tq, D], whether a one-query axis was added and must be squeezed out)."""
    return (query.unsqueeze(1), True) if query.dim() == 2 else (query, False)


def additive_attention(query_proj, key_proj, v, values, mask=None):
    """scores[b,q,k] = sum_a v[a] tanh(query_proj[b,q,a] + key_proj[b,k,a]); see functional.additive_attention."""
    query, single = with_query_axis(query_proj)
    scores = torch.tanh(query.unsqueeze(2) + key_proj.unsqueeze(1)) @ v  # [B, Tq, Tk]
    context, weights = masked_softmax_context(scores, values, mask)
    return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)
