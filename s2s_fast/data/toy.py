"""Toy tasks for quick checks: copy, reverse or sort a random sequence of symbols (``make_pairs``, ``ToyTask``).

Token ids: 0 = pad, 1 = BOS, 2 = EOS, symbols from 3 on.
"""

from __future__ import annotations

import random

from .base import EvalItem, Task
from .metrics import exact_match_and_token_error
from .vocab import SPECIALS, Vocabulary

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_SYMBOL = 3
TASKS = ("copy", "reverse", "sort")


def toy_vocab_size(num_symbols: int) -> int:
    return FIRST_SYMBOL + num_symbols


def make_pairs(task: str, count: int, num_symbols: int = 10, min_len: int = 1, max_len: int = 10,
               seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``count`` (source, target) id lists; lengths uniform in [min_len, max_len]; deterministic in ``seed``."""
    if task not in TASKS:
        raise ValueError(f"unknown toy task {task!r}; choose one of {', '.join(TASKS)}")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"toy task lengths need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    if num_symbols < 1:
        raise ValueError(f"toy task needs num_symbols >= 1, got {num_symbols}")
    rng = random.Random(seed)
    transform = {"copy": list, "reverse": lambda s: s[::-1], "sort": sorted}[task]
    pairs = []
    for _ in range(count):
        source = [rng.randrange(num_symbols) + FIRST_SYMBOL for _ in range(rng.randint(min_len, max_len))]
        pairs.append((source, transform(source)))
    return pairs


class ToyTask(Task):
    """copy / reverse / sort sequences of symbols written as space-separated integers 0 .. toy_symbols-1."""

    primary_metric = "accuracy"
    higher_is_better = True
    SPLIT_SEEDS = {"train": 1, "dev": 2, "test": 3}
    READS = ("toy_symbols", "toy_min_len", "toy_max_len", "toy_train_size", "toy_eval_size", "toy_seed")

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

    def encode_source(self, text: str) -> list[int]:
        # The symbols are the integers; the vocabulary's special tokens are not input (they would enter as pad,
        # BOS or EOS ids).
        specials = sorted({token for token in self.source_tokens(text) if token in SPECIALS})
        if specials:
            raise ValueError(f"{text.strip()!r} has symbols the model does not know: {' '.join(specials)}")
        return super().encode_source(text)

    def score(self, hypotheses, items):
        return exact_match_and_token_error([self.target_tokens(h) for h in hypotheses],
                                           [item.references for item in items])

    def format_metrics(self, metrics: dict) -> str:
        return f"accuracy {100 * metrics['accuracy']:.2f}%  token error {100 * metrics['token_error']:.2f}%"
