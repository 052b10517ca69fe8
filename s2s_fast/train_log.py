"""What a training run reports: log lines, metric events, and the throughput of a window of steps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .distributed import Distributed

LOG_FILE, METRICS_FILE = "train.log", "metrics.jsonl"


class Logger:
    """Lines to stdout and <output_dir>/train.log, events to <output_dir>/metrics.jsonl; silent off process 0."""

    def __init__(self, output_dir: Path, active: bool, echo: Callable[[str], Any] = print):
        self.active = active
        self.echo = echo
        self.log_path = output_dir / LOG_FILE
        self.metrics_path = output_dir / METRICS_FILE

    def __call__(self, line: str, echo: bool = True) -> None:
        """``line`` into train.log, and (``echo``) to the console."""
        if self.active:
            if echo:
                self.echo(line)
            with open(self.log_path, "a") as file:
                file.write(line + "\n")

    def event(self, **values) -> None:
        if self.active:
            with open(self.metrics_path, "a") as file:
                file.write(json.dumps(values) + "\n")


class ThroughputMeter:
    """Mean loss per target token and tokens per second (source and target) over a window of steps, summed over the
    processes: ``add`` after every step, ``read`` at the end of a window, which also starts the next one. A model
    with a CTC head (Seq2SeqConfig.ctc_weight) also adds each step's CTC loss, the part of its loss that is CTC's."""

    def __init__(self):
        self._start_window()

    def _start_window(self) -> None:
        self.weighted_loss, self.weighted_ctc, self.target_tokens, self.tokens = 0.0, 0.0, 0, 0
        self.started = time.perf_counter()

    def add(self, loss: float, target_tokens: int, source_tokens: int, ctc_loss: float | None = None) -> None:
        self.weighted_loss += loss * target_tokens
        self.weighted_ctc += (ctc_loss or 0.0) * target_tokens
        self.target_tokens += target_tokens
        self.tokens += target_tokens + source_tokens

    def read(self, distributed: Distributed) -> tuple[float, float, float]:
        """(mean loss, mean CTC loss (0 without a CTC head), tokens per second) of the window, over every process."""
        totals = torch.tensor([self.weighted_loss, self.weighted_ctc, float(self.target_tokens), float(self.tokens)],
                              dtype=torch.float64)
        distributed.all_reduce(totals)
        elapsed = time.perf_counter() - self.started
        self._start_window()
        target_tokens = max(float(totals[2]), 1.0)
        return float(totals[0]) / target_tokens, float(totals[1]) / target_tokens, float(totals[3]) / max(elapsed, 1e-9)
