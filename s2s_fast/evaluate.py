"""Decoding many inputs in length-sorted batches, scoring a split, and drawing attention heatmaps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import find_checkpoint, load_checkpoint
from .data import EvalItem, Task, collate, token_batches
from .models import Seq2Seq


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, spread evenly over the sequence (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"max_examples must be positive, got {limit}")
    return [items[i * len(items) // limit] for i in range(limit)]


def translate(model: Seq2Seq, sources: Sequence[Sequence[int]], *, beam_size: int = 1, length_penalty: float = 0.0,
              n_best: int = 1, batch_tokens: int = 6000, return_attention: bool = False,
              max_len_ratio: float | None = None) -> tuple[list, list | None]:
    """Decode source id lists in length-sorted batches of about ``batch_tokens`` source tokens.

    Returns:
        (per input: token ids of the best hypothesis, or n_best (ids, score) pairs when n_best > 1;
         per input: attention [output length, source length] of the best hypothesis, or None without
         return_attention), both in the order of ``sources``.
    """
    device = next(model.parameters()).device
    hypotheses: list = [None] * len(sources)
    attentions: list | None = [None] * len(sources) if return_attention else None
    config = model.config
    for indices in token_batches([len(s) for s in sources], batch_tokens, shuffle=False):
        batch = collate([(sources[i], []) for i in indices], config.pad_id, config.bos_id, config.eos_id)
        result = model.generate(batch.src.to(device), batch.src_lengths, beam_size=beam_size,
                                length_penalty=length_penalty, n_best=n_best, return_attention=return_attention,
                                max_len_ratio=max_len_ratio)
        outputs, weights = result if return_attention else (result, None)
        for position, index in enumerate(indices):
            hypotheses[index] = outputs[position]
            if attentions is not None:
                attentions[index] = weights[position]
    return hypotheses, attentions


def score_items(model: Seq2Seq, task: Task, items: Sequence[EvalItem], beam_size: int = 1,
                length_penalty: float = 0.0, batch_tokens: int = 6000) -> tuple[dict, list]:
    """(the task's metrics, best hypotheses' ids) for evaluation items."""
    hypotheses, _ = translate(model, [item.src_ids for item in items], beam_size=beam_size,
                              length_penalty=length_penalty, batch_tokens=batch_tokens)
    return task.score(hypotheses, items), hypotheses


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


def evaluate_run(path: str, split: str, checkpoint: str = "best", beam_size: int = 5, length_penalty: float = 0.0,
                 max_examples: int | None = None, batch_tokens: int = 6000, device: str = "cpu") -> dict:
    """Score a trained model on a split of its task; writes the hypotheses and a JSON report under
    ``<run>/evaluations/`` (next to the checkpoints) and returns the report."""
    started = time.perf_counter()
    checkpoint_dir = find_checkpoint(path, checkpoint)
    model, task, _ = load_checkpoint(checkpoint_dir, device)
    items = evenly_spaced(task.evaluation_items(split), max_examples)
    metrics, hypotheses = score_items(model, task, items, beam_size, length_penalty, batch_tokens)
    report = {"checkpoint": str(checkpoint_dir), "task": task.name, "split": split, "examples": len(items),
              "beam_size": beam_size, "length_penalty": length_penalty, "max_examples": max_examples,
              "device": str(device), "seconds": round(time.perf_counter() - started, 2), "metrics": metrics,
              "summary": task.format_metrics(metrics)}
    run_dir = checkpoint_dir.parent.parent if checkpoint_dir.parent.name == "checkpoints" else checkpoint_dir
    out_dir = run_dir / "evaluations"
    out_dir.mkdir(exist_ok=True)
    stem = f"{split}-{checkpoint_dir.name}-beam{beam_size}"
    (out_dir / f"{stem}.hyp").write_text("".join(f"{item.source}\t{task.target_text(h)}\n"
                                                 for item, h in zip(items, hypotheses)))
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    report["files"] = str(out_dir / stem) + ".{hyp,json}"
    return report
