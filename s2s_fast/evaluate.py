"""Scoring a trained model on a split of its task (the ``evaluate`` command) and on dev during training."""

from __future__ import annotations

import json
import time
from typing import Sequence

from .checkpoint import open_checkpoint
from .data import EvalItem, Task
from .inference import translate
from .models import Seq2Seq

EVALUATIONS = "evaluations"


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, spread evenly over the sequence (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"max_examples must be positive, got {limit}")
    return [items[i * len(items) // limit] for i in range(limit)]


def score_items(model: Seq2Seq, task: Task, items: Sequence[EvalItem], beam_size: int = 1,
                length_penalty: float = 0.0, batch_tokens: int = 6000) -> tuple[dict, list]:
    """(the task's metrics, best hypotheses' ids) for evaluation items."""
    hypotheses, _ = translate(model, [item.src_ids for item in items], beam_size=beam_size,
                              length_penalty=length_penalty, batch_tokens=batch_tokens)
    return task.score(hypotheses, items), hypotheses


def evaluate_run(path: str, split: str, checkpoint: str = "best", beam_size: int = 5, length_penalty: float = 0.0,
                 max_examples: int | None = None, batch_tokens: int = 6000, device: str = "cpu") -> dict:
    """Score a trained model on a split of its task; writes the hypotheses and a JSON report under
    ``<run>/evaluations/`` (next to the checkpoints) and returns the report."""
    started = time.perf_counter()
    checkpoint_dir, model, task, _ = open_checkpoint(path, checkpoint, device)
    items = evenly_spaced(task.evaluation_items(split), max_examples)
    metrics, hypotheses = score_items(model, task, items, beam_size, length_penalty, batch_tokens)
    report = {"checkpoint": str(checkpoint_dir), "task": task.name, "split": split, "examples": len(items),
              "beam_size": beam_size, "length_penalty": length_penalty, "max_examples": max_examples,
              "device": str(device), "seconds": round(time.perf_counter() - started, 2), "metrics": metrics,
              "summary": task.format_metrics(metrics)}
    run_dir = checkpoint_dir.parent.parent if checkpoint_dir.parent.name == "checkpoints" else checkpoint_dir
    out_dir = run_dir / EVALUATIONS
    out_dir.mkdir(exist_ok=True)
    stem = f"{split}-{checkpoint_dir.name}-beam{beam_size}"
    (out_dir / f"{stem}.hyp").write_text("".join(f"{item.source}\t{task.target_text(h)}\n"
                                                 for item, h in zip(items, hypotheses)))
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    report["files"] = str(out_dir / stem) + ".{hyp,json}"
    return report
