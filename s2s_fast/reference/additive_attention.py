"""Reference additive (Bahdanau) attention in pure PyTorch, and what every attention here shares: the masked softmax and
the one-query-per-row adaptor.

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


def one_query_per_row(attention, query, *args, **kwargs):
    """``attention(query [B, Tq, D], ...) -> (context [B, Tq, Dv], weights [B, Tq, Tk])`` called on ``query`` [B, D]
    or [B, Tq, D] and the rest of its arguments: a [B, D] query (one per row, a decoder step) runs as Tq = 1, and its
    results lose that axis again. functional's attention ops hand every backend [B, Tq, D] queries through this; the
    reference's own entry points take both forms through it too, for the tests and benchmarks that call them
    directly."""
    if query.dim() == 3:
        return attention(query, *args, **kwargs)
    context, weights = attention(query.unsqueeze(1), *args, **kwargs)
    return context.squeeze(1), weights.squeeze(1)


def additive_attention(query_proj, key_proj, v, values, mask=None):
    """scores[b,q,k] = sum_a v[a] tanh(query_proj[b,q,a] + key_proj[b,k,a]); see functional.additive_attention."""
    return one_query_per_row(_additive_attention, query_proj, key_proj, v, values, mask)


def _additive_attention(query_proj, key_proj, v, values, mask):
    scores = torch.tanh(query_proj.unsqueeze(2) + key_proj.unsqueeze(1)) @ v  # [B, Tq, Tk]
    return masked_softmax_context(scores, values, mask)
