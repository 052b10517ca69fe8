"""Attention heatmaps of decoded inputs, as PNG files (the decode command's --attention-plot)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

# A token's share of the figure (inches), and the most a side takes: past that (an input of more than about 70
# tokens) the heatmap keeps its cells and labels every k-th token. Unbounded, a 1,000-letter word asked matplotlib
# for a 40,000 x 17,000 pixel image and died for want of memory.
INCHES_PER_SOURCE_TOKEN, INCHES_PER_OUTPUT_TOKEN, MARGIN_INCHES, MAX_INCHES = 0.4, 0.35, 1.5, 30.0


def _side(count: int, per_token: float, least: float) -> tuple[float, int]:
    """(inches, label every k-th token) of one side of the figure for ``count`` tokens."""
    room = MAX_INCHES - MARGIN_INCHES
    return min(MAX_INCHES, max(least, per_token * count + MARGIN_INCHES)), max(1, math.ceil(per_token * count / room))


def _label(axis_ticks, tokens: Sequence[str], step: int, **text) -> None:
    """Ticks and labels of every ``step``-th token, read literally (a "$" is not the start of matplotlib's math)."""
    axis_ticks(range(0, len(tokens), step), labels=list(tokens)[::step], parse_math=False, **text)


def plot_attention(weights: torch.Tensor, source_tokens: Sequence[str], target_tokens: Sequence[str], path: Path,
                   title: str = "") -> None:
    """Save a heatmap of attention weights [output length, source length] (a row per output token) as a PNG, at
    most MAX_INCHES on a side at 100 dpi, tokens and title as written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = weights.float().cpu().numpy()
    width, source_step = _side(len(source_tokens), INCHES_PER_SOURCE_TOKEN, 3.0)
    height, target_step = _side(len(target_tokens), INCHES_PER_OUTPUT_TOKEN, 2.5)
    figure, axes = plt.subplots(figsize=(width, height))
    if weights.shape[0]:
        axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        _label(axes.set_yticks, target_tokens, target_step)
    else:
        axes.text(0.5, 0.5, "(empty output)", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    _label(axes.set_xticks, source_tokens, source_step, rotation=90)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    if title:
        axes.set_title(title, parse_math=False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
