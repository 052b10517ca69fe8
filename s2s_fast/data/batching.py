"""Length-bucketed batches sized by tokens.

A batch's size is its padded token count: number of examples x the longest example in it, where an example's length
is max(source tokens, target tokens + 1) (the decoder reads BOS + target and predicts target + EOS). Training order is
a pure function of (seed, epoch), so a run can be resumed at any batch without storing the order itself.
"""

from __future__ import annotations

import random
from typing import Sequence


def _split_sorted(order: Sequence[int], lengths: Sequence[int], batch_tokens: int, max_batch_size: int | None):
    batches, current, longest = [], [], 0
    for index in order:
        longest_with = max(longest, lengths[index])
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        if current and (longest_with * (len(current) + 1) > batch_tokens or too_many):
            batches.append(current)
            current, longest_with = [], lengths[index]
        current.append(index)
        longest = longest_with
    if current:
        batches.append(current)
    return batches


def token_batches(lengths: Sequence[int], batch_tokens: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
                  max_batch_size: int | None = None) -> list[list[int]]:
    """Group example indices into batches of at most ``batch_tokens`` padded tokens (an example longer than that gets
    a batch of its own).

    With shuffle, examples of equal length are shuffled, grouped by length, and the batches shuffled; the result is
    a deterministic function of (seed, epoch). Without shuffle, batches follow increasing length (evaluation).
    """
    if not isinstance(batch_tokens, int) or isinstance(batch_tokens, bool) or batch_tokens < 1:
        raise ValueError(f"token_batches: batch_tokens must be a positive integer, got {batch_tokens!r}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"token_batches: max_batch_size must be positive or None, got {max_batch_size!r}")
    rng = random.Random(f"{seed}:{epoch}")
    tie_break = [rng.random() for _ in lengths] if shuffle else range(len(lengths))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], tie_break[i]))
    batches = _split_sorted(order, lengths, batch_tokens, max_batch_size)
    if shuffle:
        rng.shuffle(batches)
    return batches


def example_length(source: Sequence[int], target: Sequence[int]) -> int:
    return max(len(source), len(target) + 1)
