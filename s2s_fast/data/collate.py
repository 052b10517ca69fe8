"""Turn lists of (source ids, target ids) into padded tensors for Seq2Seq."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


class Batch(NamedTuple):
    src: torch.Tensor  # [B, S] source ids, padded
    src_lengths: torch.Tensor  # [B] int64 on the CPU
    tgt_in: torch.Tensor  # [B, T] BOS + target, padded
    tgt_out: torch.Tensor  # [B, T] target + EOS, padded

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device), self.src_lengths, self.tgt_in.to(device), self.tgt_out.to(device))


def pad(sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Right-pad id lists into a [B, max length] int64 tensor."""
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            ids = torch.as_tensor(sequence)
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:  # cast, 3.9 read as 3
                raise ValueError(f"token ids must be integers, got {ids.dtype} ({list(sequence)[:8]})")
            out[row, :len(sequence)] = ids
    return out


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """(source, target) id lists -> Batch; the decoder reads BOS + target and predicts target + EOS."""
    sources = [source for source, _ in pairs]
    if any(len(source) == 0 for source in sources):
        raise ValueError("collate: every source needs at least one token")
    return Batch(pad(sources, pad_id), torch.tensor([len(s) for s in sources], dtype=torch.long),
                 pad([[bos_id, *target] for _, target in pairs], pad_id),
                 pad([[*target, eos_id] for _, target in pairs], pad_id))
