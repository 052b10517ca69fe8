"""Data: tasks (g2p, parallel text, toy), vocabularies, metrics and batching."""

from .base import SPLITS, EvalItem, MissingSplit, Task
from .batching import example_length, token_batches
from .collate import Batch, collate, pad
from .tasks import TASK_NAMES, build_task, check_task_name, load_task
from .toy import BOS_ID, EOS_ID, PAD_ID, TASKS, make_pairs, toy_vocab_size
from .vocab import Vocabulary

__all__ = ["BOS_ID", "Batch", "EOS_ID", "EvalItem", "MissingSplit", "PAD_ID", "SPLITS", "TASKS", "TASK_NAMES",
           "Task", "Vocabulary", "build_task", "check_task_name", "collate", "example_length", "load_task",
           "make_pairs", "pad", "token_batches", "toy_vocab_size"]
