"""Attention heatmaps of decoded inputs, as PNG files (the decode command's --attention-plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def plot_attention(weights: torch.Tensor, source_tokens: Sequence[str], target_tokens: Sequence[str], path: Path,
                   title: str = "") -> None:
    """Save a heatmap of attention weights [output length, source length] (a row per output token) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = weights.float().cpu().numpy()
    figure, axes = plt.subplots(figsize=(max(3.0, 0.4 * len(source_tokens) + 1.5),
                                         max(2.5, 0.35 * len(target_tokens) + 1.5)))
    if weights.shape[0]:
        axes.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        axes.set_yticks(range(len(target_tokens)), labels=list(target_tokens))
    else:
        axes.text(0.5, 0.5, "(empty output)", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    axes.set_xticks(range(len(source_tokens)), labels=list(source_tokens), rotation=90)
    axes.set_xlabel("source")
    axes.set_ylabel("output")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
