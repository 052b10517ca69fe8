"""Toy tasks for quick checks: copy, reverse or sort a random sequence of symbols.

Token ids: 0 = pad, 1 = BOS, 2 = EOS, symbols from 3 on.
"""

from __future__ import annotations

import random

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
