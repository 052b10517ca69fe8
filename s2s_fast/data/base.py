"""What every task provides: the Task base class, the splits (SPLITS), and EvalItem, one example as evaluation
reads it.

A task is built once for training, saved next to every checkpoint as ``task.json`` (vocabularies and options;
sentencepiece models beside it) and loaded back for decoding and evaluation; see :mod:`s2s_fast.data.tasks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

from .vocab import Vocabulary

TASK_FILE = "task.json"
SPLITS = ("train", "dev", "test")


class EvalItem(NamedTuple):
    source: str  # the source as a user would type it
    src_ids: list
    references: list  # task-specific: pronunciations (g2p), one detokenised sentence (text), one token list (toy)


class MissingSplit(ValueError):
    """A task asked for a split it has no data for (the parallel task without --dev-src/--dev-tgt, say)."""


class Task:
    """Where examples come from, how text becomes ids and back, and how hypotheses are scored.

    Subclasses set name, primary_metric and higher_is_better.
    """

    name: str
    primary_metric: str
    higher_is_better: bool
    # The options a loaded task reads (load_task refuses a task.json without them).
    READS: tuple[str, ...] = ()
    # Options naming files whose contents the task compares itself (differs_from), not by their paths.
    NAMES_OF_FILES_COMPARED: tuple[str, ...] = ()

    def __init__(self, src_vocab: Vocabulary, tgt_vocab: Vocabulary, options: dict):
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.options = options
        # What building the task found that the user should know and that does not stop it (train logs each).
        self.notes: list[str] = []

    def training_pairs(self, split: str) -> list[tuple[list[int], list[int]]]:
        raise NotImplementedError

    def evaluation_items(self, split: str) -> list[EvalItem]:
        raise NotImplementedError

    def source_tokens(self, text: str) -> list[str]:
        """A user's source text -> the model's source tokens; raises ValueError for input the model cannot read."""
        raise NotImplementedError

    def encode_source(self, text: str) -> list[int]:
        tokens = self.source_tokens(text)
        if not tokens:
            raise ValueError("empty input")
        unknown = self.src_vocab.unknown(tokens)
        if unknown:
            raise ValueError(f"{text.strip()!r} has symbols the model does not know: "
                             f"{' '.join(sorted(set(unknown)))}")
        return self.src_vocab.encode(tokens)

    def target_tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tgt_vocab.decode(ids)

    def target_text(self, ids: Sequence[int]) -> str:
        return " ".join(self.target_tokens(ids))

    def score(self, hypotheses: Sequence[Sequence[int]], items: Sequence[EvalItem]) -> dict:
        raise NotImplementedError

    def format_metrics(self, metrics: dict) -> str:
        raise NotImplementedError

    def differs_from(self, other: "Task", data: bool = False) -> str | None:
        """None when ``other`` reads sources and writes targets as this task does (what the members of an ensemble
        must share), and with ``data`` also reads the same examples (what scoring an ensemble on a split needs: a
        member trained on other data may have seen that split); else what differs."""
        if other.name != self.name:
            return f"task {other.name} against {self.name}"
        if other.src_vocab != self.src_vocab:
            return "the source vocabularies differ"
        if other.tgt_vocab != self.tgt_vocab:
            return "the target vocabularies differ"
        if not data:
            return None
        changed = sorted(key for key in set(self.options) | set(other.options)
                         if key not in self.NAMES_OF_FILES_COMPARED and self.options.get(key) != other.options.get(key))
        return f"the task's data settings differ ({', '.join(changed)})" if changed else None

    def save(self, directory: Path) -> None:
        state = {"task": self.name, "src_vocab": self.src_vocab.to_json(), "tgt_vocab": self.tgt_vocab.to_json(),
                 "options": self.options}
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / TASK_FILE).write_text(json.dumps(state, indent=1) + "\n")
