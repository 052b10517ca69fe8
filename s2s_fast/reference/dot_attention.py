"""Reference dot-product (Luong) attention in pure PyTorch."""

from __future__ import annotations

from .additive_attention import masked_softmax_context, one_query_per_row


def dot_attention(query, keys, values, mask=None):
    """scores[b,q,k] = query[b,q] . keys[b,k]; see functional.dot_attention."""
    return one_query_per_row(_dot_attention, query, keys, values, mask)


def _dot_attention(query, keys, values, mask):
    return masked_softmax_context(query @ keys.transpose(1, 2), values, mask)
