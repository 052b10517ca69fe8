"""Checkpoints: written atomically, the last one and the best-on-dev one tracked by small pointer files.

Layout under a training run's output directory::

    checkpoints/step-00001000/   model.safetensors, model_config.json, task.json (vocabularies; sentencepiece
                                 models beside it), train_config.json, trainer_state.pt (optimizer, scheduler,
                                 data order, every process's RNG states, early-stopping state)
    checkpoints/latest.json      {"checkpoint": "step-00001000", "step": 1000}
    checkpoints/best.json        {"checkpoint": ..., "step": ..., "metric": "wer", "value": 0.23, ...}

A checkpoint is written into a hidden temporary directory, flushed to disk, then renamed into place; only then is a
pointer file replaced (os.replace, atomic on POSIX). A crash at any moment leaves the previous pointers naming
complete checkpoints. The best pointer only ever moves to a better value; the checkpoint it names is never pruned.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from .data import Task, load_task
from .models import Seq2Seq, Seq2SeqConfig

CHECKPOINTS = "checkpoints"
LATEST, BEST = "latest.json", "best.json"
MODEL_WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"
TRAIN_CONFIG, TRAINER_STATE = "train_config.json", "trainer_state.pt"
PREFIX = "step-"


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomic(path: Path, value) -> None:
    """Write JSON to ``path`` so that readers see the old content or the new one, never a mix."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as file:
        json.dump(value, file, indent=1)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_path(path.parent)


def _read_pointer(root: Path, name: str) -> dict | None:
    path = root / name
    return json.loads(path.read_text()) if path.is_file() else None


def is_better(value: float, reference: float | None, higher_is_better: bool) -> bool:
    if reference is None:
        return True
    return value > reference if higher_is_better else value < reference


def save_checkpoint(output_dir: Path, step: int, model: Seq2Seq, task: Task, train_config: dict,
                    trainer_state: dict, keep_last: int = 1) -> Path:
    """Write checkpoint ``step`` atomically, point latest.json at it, prune old ones; returns its directory."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:08d}"
    final = root / name
    temporary = root / f".{name}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_model(model, str(temporary / MODEL_WEIGHTS))
    (temporary / MODEL_CONFIG).write_text(json.dumps(model.config.to_dict(), indent=1) + "\n")
    task.save(temporary)
    (temporary / TRAIN_CONFIG).write_text(json.dumps(train_config, indent=1) + "\n")
    torch.save(trainer_state, temporary / TRAINER_STATE)
    for file in temporary.iterdir():
        _fsync_path(file)
    _fsync_path(temporary)
    if final.exists():
        stale = root / f".{name}.stale"
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        temporary.rename(final)
        shutil.rmtree(stale)
    else:
        temporary.rename(final)
    _fsync_path(root)
    write_json_atomic(root / LATEST, {"checkpoint": name, "step": step})
    prune(root, keep_last)
    return final


def update_best(output_dir: Path, checkpoint: Path, metric: str, value: float, higher_is_better: bool,
                details: dict | None = None) -> bool:
    """Point best.json at ``checkpoint`` if ``value`` beats the recorded best; returns whether it did."""
    root = Path(output_dir) / CHECKPOINTS
    current = _read_pointer(root, BEST)
    if current is not None and current.get("metric") == metric and not is_better(value, current["value"],
                                                                                   higher_is_better):
        return False
    write_json_atomic(root / BEST, {"checkpoint": Path(checkpoint).name, "step": int(checkpoint.name[len(PREFIX):]),
                                    "metric": metric, "value": value, "higher_is_better": higher_is_better,
                                    **(details or {})})
    return True


def prune(root: Path, keep_last: int) -> None:
    """Remove checkpoints other than the newest ``keep_last`` and those a pointer names, and leftover temporaries."""
    protected = {pointer["checkpoint"] for pointer in (_read_pointer(root, LATEST), _read_pointer(root, BEST))
                 if pointer}
    steps = sorted(path for path in root.iterdir() if path.is_dir() and path.name.startswith(PREFIX))
    for path in steps[:max(len(steps) - keep_last, 0)]:
        if path.name not in protected:
            shutil.rmtree(path)
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(".") and path.name.endswith((".tmp", ".stale")):
            shutil.rmtree(path)


def find_checkpoint(path: str | Path, which: str = "best") -> Path:
    """The checkpoint directory meant by ``path``: a checkpoint itself, or a training output directory whose
    ``which`` ("best" or "last") checkpoint is wanted; "best" falls back to the last one when no dev evaluation
    happened."""
    path = Path(path)
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    if (path / MODEL_WEIGHTS).is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory")
    root = path / CHECKPOINTS
    pointer = _read_pointer(root, BEST) if which == "best" else None
    pointer = pointer or _read_pointer(root, LATEST)
    if pointer is None:
        raise FileNotFoundError(f"{path} holds no checkpoint (expected {root / LATEST}); train with "
                                f"s2s-fast train --output-dir {path}")
    checkpoint = root / pointer["checkpoint"]
    if not (checkpoint / MODEL_WEIGHTS).is_file():
        raise FileNotFoundError(f"{checkpoint}: named by {root} but missing its weights")
    return checkpoint


def load_checkpoint(checkpoint: Path, device: torch.device | str = "cpu") -> tuple[Seq2Seq, Task, dict]:
    """(model in eval mode on ``device``, task, the training configuration as a dict) from a checkpoint directory."""
    checkpoint = Path(checkpoint)
    config = Seq2SeqConfig.from_dict(json.loads((checkpoint / MODEL_CONFIG).read_text()))
    model = Seq2Seq(config)
    load_model(model, str(checkpoint / MODEL_WEIGHTS))
    task = load_task(checkpoint)
    train_config = json.loads((checkpoint / TRAIN_CONFIG).read_text())
    return model.to(device).eval(), task, train_config


def load_trainer_state(checkpoint: Path) -> dict:
    return torch.load(Path(checkpoint) / TRAINER_STATE, map_location="cpu", weights_only=True)


def rng_state(device: torch.device) -> dict:
    """This process's random number generator states (torch's CPU generator, and ``device``'s on CUDA), to save in
    a checkpoint so that a resumed run draws the same dropout and sampling numbers as an uninterrupted one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
