"""Scoring a trained model on a split of its task (the ``evaluate`` command) and on dev during training."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from .backends import float32_matmul_precision, matmul_precision_record
from .checkpoint import averaged_record, open_models, run_directory
from .data import EvalItem, Task
from .files import write_files_atomic
from .inference import translate
from .models import BothDirections, Ensemble, Seq2Seq

EVALUATIONS = "evaluations"


def evenly_spaced(items: Sequence, limit: int | None) -> list:
    """At most ``limit`` items, spread evenly over the sequence (all of them when limit is None)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise ValueError(f"max_examples must be positive, got {limit}")
    return [items[i * len(items) // limit] for i in range(limit)]


def score_items(model: Seq2Seq | Ensemble | BothDirections, task: Task, items: Sequence[EvalItem], beam_size: int = 1,
                length_penalty: float = 0.0, batch_tokens: int = 6000, ctc_weight: float = 0.0) -> tuple[dict, list]:
    """(the task's metrics, best hypotheses' ids) for evaluation items."""
    hypotheses, _ = translate(model, [item.src_ids for item in items], beam_size=beam_size,
                              length_penalty=length_penalty, batch_tokens=batch_tokens, ctc_weight=ctc_weight)
    return task.score(hypotheses, items), hypotheses


def _output_directory(folder: Path) -> Path:
    """``folder``, made if it is not there, refused (PermissionError naming it) when its files cannot be written."""
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise type(error)(error.errno, f"{folder}: cannot make the folder for the evaluation's files "
                                       f"({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{folder}: cannot write the evaluation's files there (no write permission)")
    return folder


def _exact_name(value: float) -> str:
    """A setting's value in a file name: 6 digits, and every digit where those would name two values alike."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def evaluate_run(path, split: str, checkpoint: str | None = None, beam_size: int = 5, length_penalty: float = 0.0,
                 max_examples: int | None = None, batch_tokens: int = 6000, device: str = "cpu",
                 average: int = 1, matmul_precision: str | None = None, backend: str | None = None,
                 ctc_weight: float = 0.0) -> dict:
    """Score a trained model on a split of its task; writes the hypotheses and a JSON report under
    ``<run>/evaluations/`` (next to the checkpoints) and returns the report. ``path`` may name several runs of the
    same task and data: they are scored as one ensemble (s2s_fast.models.Ensemble, or BothDirections for runs of
    both writing directions), the files written under the first run and named after every member. With ``average``
    above 1 each run's model is the mean of its last ``average`` checkpoints up to the one ``checkpoint`` names
    (s2s_fast.checkpoint.open_averaged); the report lists them under "averaged" and the files' names end in
    ``-avgN``; a length penalty adds ``-lpA``, a CTC weight in decoding (s2s_fast.decoding.generate) ``-ctcW``, a
    sample of ``max_examples`` out of more ``-nN``, a float32 matmul precision other than "highest"
    (``matmul_precision``, which holds while the split is decoded, or the process's own) ``-mpP``, a ``backend``
    (which replaces the runs' own, s2s_fast.checkpoint.load_checkpoint) ``-beB``, so that no evaluation overwrites
    another's files. The folder the files go in is made, and checked writable, before the split is decoded."""
    started = time.perf_counter()
    with float32_matmul_precision(matmul_precision):  # a bad word refused before the models are read
        checkpoint_dirs, model, task, members = open_models(path, checkpoint, device, same_data=True,
                                                            average=average, backend=backend)
        out_dir = _output_directory(run_directory(checkpoint_dirs[0]) / EVALUATIONS)
        every_item = task.evaluation_items(split)
        items = evenly_spaced(every_item, max_examples)
        precision, note = matmul_precision_record(torch.device(device))
        metrics, hypotheses = score_items(model, task, items, beam_size, length_penalty, batch_tokens, ctc_weight)
    ensemble = len(checkpoint_dirs) > 1
    report = {"checkpoint": [str(c) for c in checkpoint_dirs] if ensemble else str(checkpoint_dirs[0]),
              "task": task.name, "split": split, "examples": len(items),
              "beam_size": beam_size, "length_penalty": length_penalty, "ctc_weight": ctc_weight,
              "max_examples": max_examples,
              "device": str(device), "seconds": round(time.perf_counter() - started, 2), "metrics": metrics,
              "summary": task.format_metrics(metrics), "average": average, "matmul_precision": precision}
    if ensemble:  # how the runs decode as one: step-wise (Ensemble), or each direction proposing (BothDirections)
        report["joint"] = "both directions" if isinstance(model, BothDirections) else "ensemble"
    if note:
        report["matmul_precision_note"] = note
    if average > 1:
        report["averaged"] = averaged_record(members)
    if backend is not None:
        report["backend"] = backend
    if ensemble:
        # The members' names for the eye, and a digest of their full paths: two runs named alike (x/b and y/b) must
        # not share the files.
        names = "+".join(f"{run_directory(c).name}.{c.name}" for c in checkpoint_dirs)
        if len(names) > 160:  # a file name stays under the file systems' 255 bytes
            names = f"{len(checkpoint_dirs)}"
        paths = "\n".join(str(Path(c).resolve()) for c in checkpoint_dirs)
        stem = f"{split}-ensemble-{names}-{hashlib.sha1(paths.encode()).hexdigest()[:8]}"
    else:
        stem = f"{split}-{checkpoint_dirs[0].name}"
    # Every setting that changes the scores is in the name, so that no evaluation overwrites another's files.
    stem += f"-avg{average}-beam{beam_size}" if average > 1 else f"-beam{beam_size}"
    if length_penalty:
        stem += f"-lp{_exact_name(length_penalty)}"
    if ctc_weight:
        stem += f"-ctc{_exact_name(ctc_weight)}"
    if len(items) < len(every_item):
        stem += f"-n{len(items)}"
    if precision != "highest":
        stem += f"-mp{precision}"
    if backend is not None:  # other kernels round otherwise (a beam's tie may fall the other way)
        stem += f"-be{backend}"
    write_files_atomic({out_dir / f"{stem}.hyp": "".join(f"{item.source}\t{task.target_text(h)}\n"
                                                         for item, h in zip(items, hypotheses)),
                        out_dir / f"{stem}.json": json.dumps(report, indent=1) + "\n"})
    report["files"] = str(out_dir / stem) + ".{hyp,json}"
    return report
