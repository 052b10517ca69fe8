"""Tasks: where examples come from, how text becomes ids and back, and how hypotheses are scored.

A task is built once for training (``build_task``), saved next to every checkpoint as ``task.json`` (vocabularies
and options; sentencepiece models beside it) and loaded back for decoding and evaluation (``load_task``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

from . import g2p
from .metrics import exact_match_and_token_error, word_and_phoneme_error_rates
from .toy import FIRST_SYMBOL, TASKS as TOY_TASKS, make_pairs
from .vocab import Vocabulary

TASK_FILE = "task.json"


class EvalItem(NamedTuple):
    source: str  # the source as a user would type it
    src_ids: list
    references: list  # task-specific: pronunciations (g2p), one detokenised sentence (text), one token list (toy)


class Task:
    """Base class; see the module docstring. Subclasses set name, primary_metric and higher_is_better."""

    name: str
    primary_metric: str
    higher_is_better: bool

    def __init__(self, src_vocab: Vocabulary, tgt_vocab: Vocabulary, options: dict):
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.options = options

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

    def save(self, directory: Path) -> None:
        state = {"task": self.name, "src_vocab": self.src_vocab.to_json(), "tgt_vocab": self.tgt_vocab.to_json(),
                 "options": self.options}
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / TASK_FILE).write_text(json.dumps(state, indent=1) + "\n")


class G2PTask(Task):
    """CMUdict grapheme-to-phoneme: letters in, stress-free ARPAbet phonemes out (see s2s_fast.data.g2p)."""

    name = "g2p"
    primary_metric = "wer"
    higher_is_better = False

    @classmethod
    def build(cls, options: dict) -> "G2PTask":
        train = g2p.load_split("train")
        letters = {letter for word, _ in train for letter in word}
        phonemes = {phoneme for _, prons in train for pron in prons for phoneme in pron}
        return cls(Vocabulary.build(letters), Vocabulary.build(phonemes), {})

    def training_pairs(self, split: str):
        return [(self.src_vocab.encode(list(word)), self.tgt_vocab.encode(pron))
                for word, prons in g2p.load_split(split) for pron in prons]

    def evaluation_items(self, split: str):
        return [EvalItem(word, self.src_vocab.encode(list(word)), [list(p) for p in prons])
                for word, prons in g2p.load_split(split)]

    def source_tokens(self, text: str) -> list[str]:
        word = g2p.normalise_word(text)
        if not word:
            raise ValueError("empty input (g2p reads one word per line)")
        if any(c.isspace() for c in word):
            raise ValueError(f"{text.strip()!r} is not one word (g2p reads one word per line)")
        return list(word)

    def score(self, hypotheses, items):
        return word_and_phoneme_error_rates([self.target_tokens(h) for h in hypotheses],
                                            [item.references for item in items])

    def format_metrics(self, metrics: dict) -> str:
        return f"WER {100 * metrics['wer']:.2f}%  PER {100 * metrics['per']:.2f}%"


class ToyTask(Task):
    """copy / reverse / sort sequences of symbols written as space-separated integers 0 .. toy_symbols-1."""

    primary_metric = "accuracy"
    higher_is_better = True
    SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}

    def __init__(self, name: str, src_vocab, tgt_vocab, options):
        super().__init__(src_vocab, tgt_vocab, options)
        self.name = name

    @classmethod
    def build(cls, name: str, options: dict) -> "ToyTask":
        vocab = Vocabulary([*Vocabulary.build([]).tokens, *(str(i) for i in range(options["toy_symbols"]))])
        return cls(name, vocab, vocab, options)

    def _pairs(self, split: str):
        if split not in self.SPLIT_SEEDS:
            raise ValueError(f"{self.name}: unknown split {split!r}; choose one of {', '.join(self.SPLIT_SEEDS)}")
        o = self.options
        count = o["toy_train_size"] if split == "train" else o["toy_eval_size"]
        pairs = make_pairs(self.name, count, o["toy_symbols"], o["toy_min_len"], o["toy_max_len"],
                           seed=1000 * o["toy_seed"] + self.SPLIT_SEEDS[split])
        to_ids = lambda ids: self.src_vocab.encode([str(i - FIRST_SYMBOL) for i in ids])  # noqa: E731
        return [(to_ids(source), to_ids(target)) for source, target in pairs]

    def training_pairs(self, split: str):
        return self._pairs(split)

    def evaluation_items(self, split: str):
        return [EvalItem(" ".join(self.src_vocab.decode(source)), source, self.tgt_vocab.decode(target))
                for source, target in self._pairs(split)]

    def source_tokens(self, text: str) -> list[str]:
        return text.split()

    def score(self, hypotheses, items):
        return exact_match_and_token_error([self.target_tokens(h) for h in hypotheses],
                                           [item.references for item in items])

    def format_metrics(self, metrics: dict) -> str:
        return f"accuracy {100 * metrics['accuracy']:.2f}%  token error {100 * metrics['token_error']:.2f}%"


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
        from .parallel import ParallelTextTask

        return ParallelTextTask.build(options, Path(workdir))
    return ToyTask.build(name, options)


def load_task(directory: Path) -> Task:
    """The task saved in ``directory`` (a checkpoint) by Task.save."""
    path = Path(directory) / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {directory} a checkpoint written by s2s-fast train?")
    state = json.loads(path.read_text())
    name = check_task_name(state["task"])
    src_vocab, tgt_vocab = Vocabulary.from_json(state["src_vocab"]), Vocabulary.from_json(state["tgt_vocab"])
    if name == "g2p":
        return G2PTask(src_vocab, tgt_vocab, state["options"])
    if name == "parallel":
        from .parallel import ParallelTextTask

        return ParallelTextTask.load(src_vocab, tgt_vocab, state["options"], Path(directory))
    return ToyTask(name, src_vocab, tgt_vocab, state["options"])

