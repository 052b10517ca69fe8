"""Data: toy tasks and batching (real tasks live beside them)."""

from .collate import Batch, collate, pad
from .toy import BOS_ID, EOS_ID, PAD_ID, TASKS, make_pairs, toy_vocab_size

__all__ = ["BOS_ID", "Batch", "EOS_ID", "PAD_ID", "TASKS", "collate", "make_pairs", "pad", "toy_vocab_size"]
