"""Dropout on the reference backend: torch.nn.functional.dropout, any device and dtype."""

from __future__ import annotations

import torch


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1 / (1 - p); see s2s_fast.functional.dropout."""
    return torch.nn.functional.dropout(input, p, training)
