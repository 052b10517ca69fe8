"""Reference dot-product (Luong) attention in pure PyTorch."""

from __future__ import annotations

from .additive_attention import masked_softmax_context, with_query_axis


def dot_attention(query, keys, values, mask=None):
    """scores[b,q,k] = query[b,q] . keys[b,k]; see functional.dot_attention."""
    query, single = with_query_axis(query)
    context, weights = masked_softmax_context(query @ keys.transpose(1, 2), values, mask)
    return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)
