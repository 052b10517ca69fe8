"""Checkpoints: written atomically, the last one and the best-on-dev one tracked by small pointer files.

Layout under a training run's output directory::

    checkpoints/step-00001000/   model.safetensors, model_config.json, task.json (vocabularies; sentencepiece
                                 models beside it), train_config.json, trainer_state.pt (optimizer, scheduler,
                                 data order, every process's RNG states, early-stopping state, the best so far)
    checkpoints/latest.json      {"checkpoint": "step-00001000", "step": 1000}
    checkpoints/best.json        {"checkpoint": ..., "step": ..., "metric": "wer", "value": 0.23, ...}

Writing a checkpoint goes in an order that no crash can undo: the files go into a temporary directory of this
process, are flushed to disk and renamed into place; then best.json moves to it if it is the new best, then
latest.json; only then are old checkpoints pruned, and never one a pointer names. So a kill at any moment leaves
pointers that name complete checkpoints, and the best checkpoint on disk is the one the trainer state records;
a run that resumes rewrites the pointers from the state it resumes (``repair_pointers``).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .backends import available_backends, check_backend_name, unavailable_reason
from .data import Task, load_task
from .files import fsync_path, one_line, read_json, temporary_path, write_json_atomic
from .models import BothDirections, Ensemble, Seq2Seq, Seq2SeqConfig, decoder_of
from .models.config import BackendCannotServeModel

CHECKPOINTS = "checkpoints"
LATEST, BEST = "latest.json", "best.json"
MODEL_WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"
TRAIN_CONFIG, TRAINER_STATE = "train_config.json", "trainer_state.pt"
PREFIX = "step-"
TRAINER_STATE_KEYS = ("step", "epoch", "epoch_step", "optimizer", "scheduler", "rng", "best", "evals_since_best",
                      "world_size")
# Errors of this machine, not of a saved file, that a reader never reports as damage: an accelerator's (torch 2.8+).
NOT_DAMAGE = tuple(error for error in (getattr(torch, "AcceleratorError", None),) if error is not None)
# How often a reader follows a pointer that moved while it loaded (a run training meanwhile pruned the checkpoint).
MAX_RELOADS = 5


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def is_better(value: float, reference: float | None, higher_is_better: bool) -> bool:
    """Whether a dev score beats the best so far (None: there is none yet); a score that is not finite never does."""
    if not math.isfinite(value):
        return False
    if reference is None:
        return True
    return value > reference if higher_is_better else value < reference


def _is_disk_full(error: BaseException) -> bool:
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)


def _covers_its_storage(tensor: torch.Tensor) -> bool:
    return tensor.storage_offset() == 0 and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


class _WeightsOnCpu:
    """A model's state on the CPU, each tensor covering a storage of its own, tied tensors (the same view twice) still
    one: what safetensors' save_model is given. On a GPU torch.nn.RNNBase (and so s2s_fast.nn.LSTM and GRU) flattens
    its weights into one cuDNN buffer, and safetensors refuses to save views that do not cover their storage. A CPU
    tensor that covers its own is passed as it is (no copy)."""

    def __init__(self, model: torch.nn.Module):
        copies, self._state = {}, {}
        for name, tensor in model.state_dict().items():
            tied = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
            if tensor.numel() == 0 or tied not in copies:
                keep = tensor.device.type == "cpu" and _covers_its_storage(tensor)
                copies[tied] = tensor.detach() if keep else tensor.detach().to("cpu", copy=True)
            self._state[name] = copies[tied]

    def state_dict(self) -> dict:
        return self._state


def _write_checkpoint_dir(root: Path, name: str, model: Seq2Seq, task: Task, train_config: dict,
                          trainer_state: dict) -> Path:
    """Write checkpoint ``name`` in a temporary directory, flush it and rename it into place (replacing one of the
    same name); on failure remove the temporary directory and, when the disk is full, say so."""
    final, temporary = root / name, temporary_path(root / name)
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_model(_WeightsOnCpu(model), str(temporary / MODEL_WEIGHTS))
        (temporary / MODEL_CONFIG).write_text(json.dumps(model.config.to_dict(), indent=1) + "\n")
        task.save(temporary)
        (temporary / TRAIN_CONFIG).write_text(json.dumps(train_config, indent=1) + "\n")
        # Serialised in memory, written by Python: a full disk then raises OSError(ENOSPC), not torch's
        # "unexpected pos".
        state = io.BytesIO()
        torch.save(trainer_state, state)
        (temporary / TRAINER_STATE).write_bytes(state.getbuffer())
        for path in temporary.iterdir():
            fsync_path(path)
        fsync_path(temporary)
    except Exception as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if _is_disk_full(error):
            raise OSError(f"{root}: no space left on device while writing checkpoint {name}; the last good "
                          "checkpoint stays (free some space, then continue with --resume)") from None
        raise
    if final.exists():
        stale = temporary_path(final, "stale")
        final.rename(stale)
        temporary.rename(final)
        shutil.rmtree(stale)
    else:
        temporary.rename(final)
    fsync_path(root)
    return final


def best_pointer(best: dict, task: Task) -> dict:
    """best.json's content for the trainer state's best ({"step", "value", "metrics"})."""
    return {"checkpoint": checkpoint_name(best["step"]), "step": best["step"], "metric": task.primary_metric,
            "value": best["value"], "higher_is_better": task.higher_is_better, "metrics": best.get("metrics")}


def save_checkpoint(output_dir: Path, step: int, model: Seq2Seq, task: Task, train_config: dict,
                    trainer_state: dict, keep_last: int = 1) -> Path:
    """Write checkpoint ``step`` atomically; point best.json at it when the trainer state's best is this step,
    then latest.json; then prune old ones. Returns its directory."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    checkpoint = _write_checkpoint_dir(root, checkpoint_name(step), model, task, train_config, trainer_state)
    best = trainer_state.get("best")
    if best is not None and best["step"] == step:
        write_json_atomic(root / BEST, best_pointer(best, task))
    write_json_atomic(root / LATEST, {"checkpoint": checkpoint.name, "step": step})
    # The best before a dev evaluation off the --eval-every grid (the last step's), which a resumed longer run
    # returns to: kept, or --checkpoint best would lose it there.
    before = trainer_state.get("before_last_eval")
    kept = {checkpoint_name(before[0]["step"])} if before is not None and before[0] is not None else set()
    prune(root, keep_last, kept)
    return checkpoint


def repair_pointers(output_dir: Path, checkpoint: Path, trainer_state: dict, task: Task) -> list[str]:
    """Make latest.json name ``checkpoint`` (the one a run resumes from) and best.json the best its trainer state
    records, as an uninterrupted run would have left them; returns a note per pointer changed."""
    root, notes = Path(output_dir) / CHECKPOINTS, []
    if _read_pointer(root, LATEST) != {"checkpoint": checkpoint.name, "step": trainer_state["step"]}:
        write_json_atomic(root / LATEST, {"checkpoint": checkpoint.name, "step": trainer_state["step"]})
        notes.append(f"latest.json now names {checkpoint.name}")
    best, current = trainer_state["best"], _read_pointer(root, BEST)
    wanted = best_pointer(best, task) if best is not None else None
    if wanted is not None and not (root / wanted["checkpoint"] / MODEL_WEIGHTS).is_file():
        notes.append(f"the best checkpoint the run recorded, {wanted['checkpoint']}, is gone: --checkpoint best "
                     "serves the last one until a better one is saved")
        wanted = None
    elif wanted is None and current is not None:
        notes.append(f"best.json no longer names {current['checkpoint']}, which this run has not reached")
    if wanted is None and current is not None:
        (root / BEST).unlink()
    elif wanted is not None and (current is None or current["checkpoint"] != wanted["checkpoint"]):
        write_json_atomic(root / BEST, wanted)
        notes.append(f"best.json now names {wanted['checkpoint']}, the best the run recorded")
    return notes


def _read_pointer(root: Path, name: str) -> dict | None:
    """A pointer file's content (None when absent); a damaged one raises ValueError naming it."""
    path = root / name
    if not path.is_file():
        return None
    pointer = read_json(path)
    if not (isinstance(pointer, dict) and isinstance(pointer.get("checkpoint"), str)
            and pointer["checkpoint"].startswith(PREFIX) and "/" not in pointer["checkpoint"]):
        raise ValueError(f"{path}: damaged pointer file (no checkpoint name in it); delete it, and train --resume "
                         "rewrites it")
    return pointer


def prune(root: Path, keep_last: int, kept: set = frozenset()) -> None:
    """Remove checkpoints other than the newest ``keep_last``, those a pointer names and those named in ``kept``, and
    leftover temporaries (the caller holds the run's lock, so no other process is writing them)."""
    protected = {pointer["checkpoint"] for pointer in (_read_pointer(root, LATEST), _read_pointer(root, BEST))
                 if pointer} | set(kept)
    steps = step_directories(root)
    for path in steps[:max(len(steps) - keep_last, 0)]:
        if path.name not in protected:
            shutil.rmtree(path)
    for path in root.iterdir():
        if not (path.name.startswith(".") and path.name.endswith((".tmp", ".stale"))):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint latest.json names; without latest.json, or when the checkpoint it names is gone (deleted by
    hand: a run never prunes what a pointer names), the newest checkpoint directory; None if neither. A run resumed
    from that one rewrites latest.json, saying so (repair_pointers)."""
    pointer = _read_pointer(root, LATEST)
    if pointer is not None and (root / pointer["checkpoint"]).is_dir():
        return root / pointer["checkpoint"]
    steps = step_directories(root) if root.is_dir() else []
    return steps[-1] if steps else None


def step_directories(root: Path) -> list[Path]:
    """The checkpoint directories in ``root`` (named ``step-`` and digits), by step: a directory of the user's
    there (``step-00004000-keep``, a copy set aside) is neither pruned nor resumed from."""
    return sorted((path for path in root.iterdir() if path.is_dir() and _step_of(path) is not None), key=_step_of)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint directory itself (it holds a model's weights), not a run's directory."""
    return (Path(path) / MODEL_WEIGHTS).is_file()


def find_checkpoint(path: str | Path, which: str | None = None) -> Path:
    """The checkpoint directory (its absolute path) meant by ``path``: a checkpoint itself, or a training output
    directory whose ``which`` ("best", the default, or "last") checkpoint is wanted; "best" falls back to the last
    one when no dev evaluation happened. ``which`` given with a checkpoint directory, which names itself, is refused
    (it was ignored)."""
    path = Path(path)
    if which not in (None, "best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    if is_checkpoint(path):
        if which is not None:
            raise ValueError(f"--checkpoint {which} picks a run's checkpoint, and {path} is a checkpoint directory "
                             "itself: give its run's directory, or leave --checkpoint out")
        return _absolute(path)
    which = which or "best"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: a file, not a training output directory or a checkpoint directory")
    root = path / CHECKPOINTS
    pointer = _read_pointer(root, BEST) if which == "best" else None
    while pointer and not (root / pointer["checkpoint"]).is_dir():
        # A run training here may have moved the pointer and pruned what it named since: read it again.
        again = _read_pointer(root, BEST)
        if again == pointer:
            raise FileNotFoundError(f"{root / BEST} names {pointer['checkpoint']}, which is not on disk (deleted?): "
                                    "pass --checkpoint last, or a checkpoint directory; train --resume rewrites "
                                    "best.json")
        pointer = again
    checkpoint = root / pointer["checkpoint"] if pointer else latest_checkpoint(root)
    if checkpoint is None:
        raise FileNotFoundError(f"{path} holds no checkpoint (expected {root / LATEST}); train with "
                                f"s2s-fast train --output-dir {path}")
    return _absolute(checkpoint)


def _absolute(checkpoint: Path) -> Path:
    """A checkpoint's path made absolute: the run it lies in (run_directory) is read from its parents' names, which
    "step-00000002" given inside checkpoints/, "." or "../step-00000008" do not hold. "." and ".." are resolved as
    text where that names the same directory inside a checkpoints/ one (a run reached through a link keeps its
    path), else through the links (a link to a checkpoint, or ".." after one)."""
    plain = Path(os.path.abspath(checkpoint))
    if plain.parent.name == CHECKPOINTS and plain.is_dir() and os.path.samefile(plain, checkpoint):
        return plain
    return Path(os.path.realpath(checkpoint))


def open_checkpoint(path: str | Path, which: str | None = None,
                    device: torch.device | str = "cpu") -> tuple[Path, Seq2Seq, Task, dict]:
    """(checkpoint directory, model, task, training configuration) of the checkpoint ``find_checkpoint`` names.
    When a run training in ``path`` meanwhile prunes that checkpoint, this follows the pointer to its successor."""
    checkpoints, model, task, train_config = open_averaged(path, which, 1, device)
    return checkpoints[0], model, task, train_config


def _step_of(checkpoint: Path) -> int | None:
    """The step in a checkpoint directory's name (``step-00001000``: 1000), None for another name."""
    digits = checkpoint.name[len(PREFIX):]
    return int(digits) if checkpoint.name.startswith(PREFIX) and digits.isdigit() else None


def _select(path: str | Path, which: str | None, average: int) -> tuple[Path, list[Path]]:
    """(the checkpoint ``find_checkpoint`` names, up to ``average`` checkpoints of its run ending with it, oldest
    first); the list is short, or empty when the named one is gone, if the run pruned them."""
    if isinstance(average, bool) or not isinstance(average, int) or average < 1:
        raise ValueError(f"the number of checkpoints to average must be a positive integer, got {average!r}")
    last = find_checkpoint(path, which)
    if average == 1:
        return last, [last]
    root, end = last.parent, _step_of(last)
    if root.name != CHECKPOINTS:
        raise ValueError(f"{last}: averaging {average} checkpoints takes them from a training run's {CHECKPOINTS}/ "
                         f"directory, and this checkpoint is not in one; give the run's directory")
    if end is None:
        raise ValueError(f"{last}: averaging {average} checkpoints takes the ones before it by the step in their "
                         f"names ({PREFIX}<digits>), and this name holds none; give the run's directory")
    steps = sorted((step, candidate) for candidate in root.iterdir()
                   if (step := _step_of(candidate)) is not None and step <= end
                   and (candidate / MODEL_WEIGHTS).is_file())
    chosen = [candidate for _, candidate in steps[-average:]]
    return last, chosen if chosen and chosen[-1].name == last.name else []


def _too_few(path: str | Path, which: str | None, average: int, last: Path, chosen: list[Path]) -> ValueError:
    """The refusal of an average for want of checkpoints, saying what is there and what would help."""
    there = f"{len(chosen)} are on disk ({', '.join(c.name for c in chosen)})" if chosen else "none are on disk"
    keep = f"train with --keep-checkpoints {average} to keep them"
    if is_checkpoint(path):  # a checkpoint directory given itself: ``which`` plays no part
        up_to, advice = last.name, f"a run keeps the best and --keep-checkpoints recent checkpoints ({keep})"
    elif which in (None, "best"):
        up_to = f"{last.name} (best)"
        advice = ("a run keeps the best and --keep-checkpoints recent checkpoints, so those before an earlier best "
                  f"are pruned: average up to the last one (--checkpoint last), or {keep}")
    else:
        up_to, advice = f"{last.name} ({which})", keep
    return ValueError(f"{run_directory(last)}: averaging {average} checkpoints up to {up_to} needs {average}, and "
                      f"{there}; {advice}")


def select_checkpoints(path: str | Path, which: str | None = None, average: int = 1) -> list[Path]:
    """The checkpoints whose weights ``open_averaged`` averages, oldest first: the one ``find_checkpoint(path,
    which)`` names and the ``average - 1`` newest of its run before it on disk (a run keeps the best and
    ``--keep-checkpoints`` recent ones). Fewer on disk raise ValueError saying how many there are."""
    last, chosen = _select(path, which, average)
    if len(chosen) < average:
        raise _too_few(path, which, average, last, chosen)
    return chosen


def pruned_between(checkpoints: list[Path]) -> str | None:
    """A note when checkpoints chosen for averaging lie further apart than their run saved (it pruned those between,
    e.g. an old best kept with the recent ones: an average the user may not have meant), else None. The run's
    saving interval is the last checkpoint's train_config.json's save_every (saves at dev evaluations and the last
    step only come closer)."""
    if len(checkpoints) < 2:
        return None
    try:
        config = read_json(checkpoints[-1] / TRAIN_CONFIG)
    except (OSError, ValueError):
        return None
    every = config.get("save_every") if isinstance(config, dict) else None
    steps = [_step_of(checkpoint) for checkpoint in checkpoints]
    if not isinstance(every, int) or None in steps or all(b - a <= every for a, b in zip(steps, steps[1:])):
        return None
    return (f"the checkpoints averaged (steps {', '.join(map(str, steps))}) lie further apart than the run saved "
            f"(every {every} steps): it pruned those between; train with --keep-checkpoints {len(checkpoints)} to "
            "keep the last ones")


def averaged_record(averaged: list[list[Path]]) -> list[str] | list[list[str]]:
    """The checkpoints averaged (open_models' last item) as reports and decode's settings record them: one run's
    list of paths as strings, several runs' lists of them (averaged_lists reads either back)."""
    lists = [[str(checkpoint) for checkpoint in run] for run in averaged]
    return lists[0] if len(lists) == 1 else lists


def averaged_lists(record: list[str] | list[list[str]]) -> list[list[Path]]:
    """averaged_record's form back to a list of paths per run."""
    runs = record if record and isinstance(record[0], list) else [record]
    return [[Path(checkpoint) for checkpoint in run] for run in runs]


def average_models(models, checkpoints: list[Path]) -> Seq2Seq:
    """The first of ``models`` (an iterable, consumed one model at a time) with every floating-point weight
    replaced by the mean over all of them, summed in float64: the usual averaging of a run's last checkpoints, one
    model decoded at one model's cost. The models must share their configuration; integer buffers must be equal.
    ``checkpoints`` name them in errors."""
    first, sums, count = None, {}, 0
    for model, checkpoint in zip(models, checkpoints):
        state = model.state_dict()
        if first is None:
            first = model
            # Copies (never the model's own tensors, even in float64): a tied weight appears under two names.
            sums = {name: tensor.to(torch.float64, copy=True) if tensor.is_floating_point() else tensor
                    for name, tensor in state.items()}
        else:
            if model.config != first.config:
                raise ValueError(f"{checkpoint} cannot be averaged with {checkpoints[0]}: their model "
                                 "configurations differ")
            for name, tensor in state.items():
                if tensor.is_floating_point():
                    sums[name] += tensor
                elif not torch.equal(tensor, sums[name]):
                    raise ValueError(f"{checkpoint}: {name} is not a weight and differs from {checkpoints[0]}'s")
        count += 1
    if first is None:
        raise ValueError("no model to average")
    with torch.no_grad():
        first.load_state_dict({name: total / count if total.is_floating_point() else total
                               for name, total in sums.items()})
    return first


def open_averaged(path: str | Path, which: str | None = None, average: int = 1, device: torch.device | str = "cpu",
                  backend: str | None = None) -> tuple[list[Path], Seq2Seq, Task, dict]:
    """(checkpoints, model, task, training configuration): with ``average`` 1 the checkpoint ``find_checkpoint``
    names; with more, the mean of the weights of the checkpoints ``select_checkpoints`` names (the task and
    training configuration are the last one's); checkpoints of another run are refused (another task, data or
    model configuration, or another of RUN_SETTINGS: seed and batching; a copy of a run of all the same settings
    cannot be told apart). ``backend`` as
    load_checkpoint's. When a run training in ``path`` meanwhile moves its pointers and prunes, this selects again."""
    previous = None
    for attempt in range(MAX_RELOADS):
        last, checkpoints = _select(path, which, average)
        settled = (last, checkpoints) == previous or attempt == MAX_RELOADS - 1
        previous = (last, checkpoints)
        if len(checkpoints) < average:
            if settled:
                raise _too_few(path, which, average, last, checkpoints)
            continue
        try:
            task, train_config = None, None

            def models():
                nonlocal task, train_config
                for checkpoint in checkpoints:
                    model, checkpoint_task, checkpoint_config = load_checkpoint(checkpoint, "cpu", backend)
                    reason = task.differs_from(checkpoint_task, data=True) if task is not None else None
                    if reason is None and train_config is not None:
                        reason = _another_run(checkpoint_config, train_config)
                    if reason is not None:  # a checkpoint of another run, copied in: one model, one task
                        raise ValueError(f"{checkpoint} cannot be averaged with {checkpoints[0]}: {reason}")
                    task, train_config = checkpoint_task, checkpoint_config
                    yield model

            model = average_models(models(), checkpoints)
            return checkpoints, model.to(device), task, train_config
        except FileNotFoundError:
            if settled:
                raise
    raise AssertionError("unreachable")


def _refuse_unavailable_backend(name: str | None, device, path, backend: str | None) -> None:
    """Refuse, when open_models loads it, a model pinned to backend ``name`` that cannot run on ``device`` here: its
    first op would refuse it too, but only after decode and evaluate had made their files and folders (open_checkpoint
    and open_averaged load such a model, to inspect or re-pin it)."""
    reason = None if name is None else unavailable_reason(name, device)
    if reason is None:
        return
    if backend is not None:
        raise ValueError(f"--backend {backend} cannot run on {device} here: {reason}")
    others = ", ".join(other for other in available_backends(device) if other != name)
    raise ValueError(f"{path}: its model was saved with backend {name}, which cannot run on {device} here: {reason}; "
                     f"give --backend auto, or another that runs here: {others}")


# The settings fixed on resume that tell two runs of one task and model apart and that nothing else compares (the
# task's options are compared in task.json, the model's in its loaded configuration: their saved training-config
# values may change across one run's resume, as a restated --model does).
RUN_SETTINGS = ("seed", "batch_tokens", "max_batch_size")


def _another_run(config: dict, first: dict) -> str | None:
    """Why the training configuration ``config`` is another run's than ``first`` (one of RUN_SETTINGS differs: one run
    keeps them, and two runs' weights averaged are no model), or None. Settings one of them lacks (an older
    version's checkpoint), or hold None (left to the task's default), are not compared."""
    for name in RUN_SETTINGS:
        if config.get(name) is not None and first.get(name) is not None and config[name] != first[name]:
            return (f"it comes from another run ({name} {config[name]!r} against {first[name]!r}); averaging takes "
                    "one run's checkpoints")
    return None


def run_directory(checkpoint: Path) -> Path:
    """The training output directory a checkpoint directory lies in (``<run>/checkpoints/step-N``), or the checkpoint
    directory itself when it lies elsewhere."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint


def open_models(paths, which: str | None = None, device: torch.device | str = "cpu", same_data: bool = False,
                average: int = 1, backend: str | None = None,
                ) -> tuple[list[Path], Seq2Seq | Ensemble | BothDirections, Task, list[list[Path]]]:
    """(checkpoint directories, model, task, checkpoints averaged) for one run or several: several become an
    Ensemble, or with runs of both writing directions a BothDirections (s2s_fast.models.decoder_of), decoding with
    the first one's task, and must share its vocabularies (and sentencepiece models); with
    ``same_data`` (scoring on a split) also its data settings. A difference raises ValueError naming both runs.
    The checkpoint directories are those ``which`` names, one per run (a checkpoint directory among runs is its own;
    given with checkpoint directories alone, ``which`` is refused); with ``average`` above 1 each run's model is
    the mean of its last ``average`` checkpoints up to that one (``open_averaged``), listed per run oldest first in
    the last item (a list of one checkpoint per run without averaging). Two paths that name one checkpoint are
    refused (a model with itself decodes as the model alone). ``backend`` as load_checkpoint's, for every run."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("no run given")
    runs_among = not all(map(is_checkpoint, paths))
    averaged, models, task, named = [], [], None, {}
    for index, path in enumerate(paths):
        own = None if runs_among and is_checkpoint(path) else which
        members, model, member_task, _ = open_averaged(path, own, average, device, backend)
        _refuse_unavailable_backend(model.config.backend, device, path, backend)
        same = named.setdefault(os.path.realpath(members[-1]), index)
        if same != index:
            raise ValueError(f"{path} and {paths[same]} name one checkpoint ({members[-1]}): a model with itself "
                             "decodes as the model alone; give each run once")
        if task is not None:
            reason = task.differs_from(member_task, data=same_data)
            if reason is not None:
                raise ValueError(f"{path} cannot join an ensemble with {paths[0]}: {reason}")
        else:
            task = member_task
        averaged.append(members)
        models.append(model)
    return [members[-1] for members in averaged], decoder_of(models), task, averaged


def load_checkpoint(checkpoint: Path, device: torch.device | str = "cpu",
                    backend: str | None = None) -> tuple[Seq2Seq, Task, dict]:
    """(model in eval mode on ``device``, task, the training configuration as a dict) from a checkpoint directory.
    A damaged file, or weights that are not finite, raise ValueError naming the file. ``backend`` ("auto" or a
    backend's name) replaces the backend the model was saved with (Seq2SeqConfig.backend: a choice of kernels, which
    a run pinned to one that this machine lacks needs); None keeps it."""
    checkpoint = Path(checkpoint)
    config_path, weights = checkpoint / MODEL_CONFIG, checkpoint / MODEL_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: is {checkpoint} a checkpoint written by s2s-fast train?")
    values = read_json(config_path)
    try:
        if not isinstance(values, dict):
            raise ValueError("not a mapping of settings")
        config = Seq2SeqConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_path}: damaged model configuration ({error})") from None
    if backend is not None:
        name = check_backend_name(backend, "--backend")
        try:
            config = dataclasses.replace(config, backend=None if name == "auto" else name)
        except BackendCannotServeModel as error:
            raise BackendCannotServeModel(
                f"--backend {backend} cannot run the model of {checkpoint}: it does not implement "
                f"{', '.join(error.missing)}; use --backend auto, or one that serves them all: "
                f"{', '.join(error.serving)}", error.missing, error.serving) from None
    model = Seq2Seq(config)
    try:
        load_model(model, str(weights))
    except (SafetensorError, RuntimeError) as error:
        if not weights.is_file():  # removed meanwhile (pruned by a run that is training): not damage
            raise FileNotFoundError(f"{weights}: removed while it was read") from None
        raise ValueError(f"{weights}: damaged, or not the weights {config_path.name} describes "
                         f"({one_line(error)})") from None
    if not all(bool(torch.isfinite(value).all()) for value in model.state_dict().values()):
        raise ValueError(f"{weights}: the weights hold NaN or infinity (the run diverged); use an earlier checkpoint")
    task = load_task(checkpoint)
    sizes = (len(task.src_vocab), len(task.tgt_vocab))
    if sizes != (config.src_vocab_size, config.tgt_vocab_size):
        raise ValueError(f"{checkpoint}: damaged, its task's vocabularies ({sizes[0]} / {sizes[1]} symbols) are not "
                         f"the model's ({config.src_vocab_size} / {config.tgt_vocab_size}, {config_path.name})")
    return model.to(device).eval(), task, read_train_config(checkpoint)


def read_train_config(checkpoint: Path) -> dict:
    """The training configuration saved in a checkpoint, as a dict; a damaged one raises ValueError naming it."""
    path = Path(checkpoint) / TRAIN_CONFIG
    values = read_json(path)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: damaged training configuration (not a mapping of settings)")
    return values


def load_trainer_state(checkpoint: Path) -> dict:
    """The trainer state saved in a checkpoint; a damaged file raises ValueError naming it."""
    path = Path(checkpoint) / TRAINER_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError, *NOT_DAMAGE):
        raise  # the file unreadable here (permissions, a failing disk) or the machine short of memory: not damage
    except Exception as error:  # torch's weights-only unpickler raises what the bytes lead it to (KeyError: 101)
        raise ValueError(f"{path}: damaged ({one_line(error)})") from None
    missing = [key for key in TRAINER_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"{path}: not a trainer state (missing {', '.join(missing)})")
    fault = _trainer_state_fault(state)
    if fault is not None:
        raise ValueError(f"{path}: damaged trainer state ({fault})")
    return state


def _count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _best_fault(best) -> str | None:
    """What is wrong with a saved best dev score ({"step", "value", "metrics"}, or None), None if nothing."""
    if best is None or (isinstance(best, dict) and _count(best.get("step"))
                        and isinstance(best.get("value"), (int, float)) and not isinstance(best.get("value"), bool)):
        return None
    return f"best is {best!r}, not a dev score with its step and value"


def _trainer_state_fault(state: dict) -> str | None:
    """What is wrong with a trainer state's fields (hand-edited, or written by something else), None if nothing: a
    resume read them as they were and failed later with a traceback (a step as a string, an empty optimizer)."""
    for key in ("step", "epoch", "epoch_step", "evals_since_best"):
        if not _count(state[key]):
            return f"{key} is {state[key]!r}, not a count"
    if not _count(state["world_size"], 1):
        return f"world_size is {state['world_size']!r}, not a number of processes"
    rng = state["rng"]
    if not (isinstance(rng, list) and len(rng) == state["world_size"] and
            all(isinstance(r, dict) and isinstance(r.get("torch"), torch.Tensor) for r in rng)):
        return f"rng is not one generator state per process ({state['world_size']})"
    if not isinstance(state["optimizer"], dict) or not {"state", "param_groups"} <= set(state["optimizer"]):
        return "optimizer is not an optimizer's state"
    if not isinstance(state["scheduler"], dict):
        return "scheduler is not a scheduler's state"
    before = state.get("before_last_eval")
    if before is not None and not (isinstance(before, (list, tuple)) and len(before) == 2 and _count(before[1])):
        return "before_last_eval is not a best score and a count"
    evaluated = state.get("evaluated_step")
    if evaluated is not None and not (_count(evaluated) and evaluated <= state["step"]):
        return f"evaluated_step is {evaluated!r}, not a step up to {state['step']}"
    return _best_fault(state["best"]) or (_best_fault(before[0]) if before is not None else None)


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
