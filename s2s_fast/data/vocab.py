"""Vocabulary: tokens <-> ids, with the special ids every Seq2Seq model here assumes (pad 0, BOS 1, EOS 2, unk 3)."""

from __future__ import annotations

from typing import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocabulary:
    """An ordered token list; the first four entries are the specials, in SPECIALS order."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"Vocabulary: the first tokens must be {list(SPECIALS)}, got {tokens[:len(SPECIALS)]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("Vocabulary: tokens must be unique")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(cls, tokens: Iterable[str]) -> "Vocabulary":
        """Specials first, then every distinct token in sorted order (deterministic whatever the input order)."""
        return cls([*SPECIALS, *sorted(set(tokens) - set(SPECIALS))])

    pad_id = property(lambda self: 0)
    bos_id = property(lambda self: 1)
    eos_id = property(lambda self: 2)
    unk_id = property(lambda self: 3)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Tokens -> ids; unknown tokens map to the unk id."""
        return [self.index.get(token, self.unk_id) for token in tokens]

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        return [token for token in tokens if token not in self.index]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Ids -> tokens, stopping at EOS. A pad or BOS id (an untrained model emits them) stays, as its symbol:
        dropped, a hypothesis holding them scored as if they were not there (an exact match, in the toy tasks)."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            out.append(self.tokens[i])
        return out

    def to_json(self) -> list[str]:
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: list[str]) -> "Vocabulary":
        if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
            raise ValueError("Vocabulary: not a list of strings")
        return cls(tokens)
