"""The task registry: the task names, building a task for training and loading one from a checkpoint.

A task is built once for training (``build_task``), saved next to every checkpoint as ``task.json`` (vocabularies
and options; sentencepiece models beside it) and loaded back for decoding and evaluation (``load_task``). Each task
lives in its own module: ``g2p``, ``parallel`` (sentencepiece text) and ``toy`` (copy, reverse, sort).
"""

from __future__ import annotations

from pathlib import Path

from ..files import one_line, read_json
from .base import TASK_FILE, Task
from .g2p import G2PTask
from .parallel import ParallelTextTask
from .toy import TASKS as TOY_TASKS, ToyTask
from .vocab import Vocabulary

TASK_NAMES = ("g2p", "parallel", *TOY_TASKS)


def check_task_name(name: str) -> str:
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    return name


def build_task(name: str, options: dict, workdir: Path) -> Task:
    """Build task ``name`` for training; ``workdir`` receives artefacts such as trained sentencepiece models."""
    check_task_name(name)
    if name == "g2p":
        return G2PTask.build(options)
    if name == "parallel":
        return ParallelTextTask.build(options, Path(workdir))
    return ToyTask.build(name, options)


def load_task(directory: Path) -> Task:
    """The task saved in ``directory`` (a checkpoint) by Task.save."""
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} a checkpoint written by s2s-fast train?")
    state = read_json(path)
    missing = [key for key in ("task", "src_vocab", "tgt_vocab", "options") if not isinstance(state, dict)
               or key not in state]
    if missing:
        raise ValueError(f"{path}: damaged task file (missing {', '.join(missing)})")
    try:
        name = check_task_name(state["task"])
        src_vocab, tgt_vocab = Vocabulary.from_json(state["src_vocab"]), Vocabulary.from_json(state["tgt_vocab"])
    except (TypeError, ValueError) as error:  # a vocabulary that is not a list of distinct strings, say
        raise ValueError(f"{path}: damaged task file ({one_line(error)})") from None
    cls = G2PTask if name == "g2p" else ParallelTextTask if name == "parallel" else ToyTask
    options = state["options"]
    absent = [key for key in cls.READS if key not in options] if isinstance(options, dict) else ["all"]
    if absent:
        raise ValueError(f"{path}: damaged task file (options missing: {', '.join(absent)})")
    if name == "g2p":
        return G2PTask(src_vocab, tgt_vocab, state["options"])
    if name == "parallel":
        return ParallelTextTask.load(src_vocab, tgt_vocab, state["options"], Path(directory))
    return ToyTask(name, src_vocab, tgt_vocab, state["options"])
