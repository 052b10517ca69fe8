"""Timing and memory measurement: median and 20/80 % quantiles over repeated, synchronised calls.

On a GPU each call is bracketed by CUDA events (no host synchronisation between calls, so launch overhead counts as
it does in real use), one provider after another; on a CPU by the host clock, the providers of a case in turn
(``measure_interleaved``), so their ratios survive a shared machine's drift. The caller rotates among several input
sets so that repeated calls do not find their inputs in the cache. For measurements outside the suite (the A/B
scripts under benchmarks/results/), ``alternate_blocks`` times settings block by block, side by side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch


@dataclass(frozen=True)
class TimingPolicy:
    """How long to warm up and to time one (benchmark, provider) pair, and the bounds on repetitions."""

    warmup_s: float
    budget_s: float
    min_reps: int
    max_reps: int


# --quick on any device, full mode on a CPU, full mode on a GPU.
QUICK = TimingPolicy(warmup_s=0.05, budget_s=0.2, min_reps=3, max_reps=100)
FULL_CPU = TimingPolicy(warmup_s=0.2, budget_s=1.0, min_reps=5, max_reps=200)
FULL_GPU = TimingPolicy(warmup_s=0.05, budget_s=0.3, min_reps=10, max_reps=500)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    q20_ms: float
    q80_ms: float
    min_ms: float
    repetitions: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile q in [0, 1] of a non-empty list (as numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(times_ms: list[float]) -> Timing:
    return Timing(quantile(times_ms, 0.5), quantile(times_ms, 0.2), quantile(times_ms, 0.8), min(times_ms),
                  len(times_ms))


def _repetitions(call: Callable[[int], object], device: torch.device, rotations: int, policy: TimingPolicy) -> int:
    """Warm ``call`` up (every input set once, then for ``policy.warmup_s``) and return how many timed calls its
    pace fills ``policy.budget_s`` with, within [min_reps, max_reps]."""
    synchronize(device)
    begin = time.perf_counter()
    call(0)
    synchronize(device)
    first_call_s = time.perf_counter() - begin
    # The first call pays for lazy initialisation; the pace is taken from the calls after it.
    start = time.perf_counter()
    calls = 1
    while calls < rotations or (time.perf_counter() - start < policy.warmup_s and calls < policy.max_reps):
        call(calls % rotations)
        calls += 1
    synchronize(device)
    per_call = (time.perf_counter() - start) / (calls - 1) if calls > 1 else first_call_s
    return int(min(policy.max_reps, max(policy.min_reps, policy.budget_s / max(per_call, 1e-9))))


def _host_time_ms(call: Callable[[int], object], index: int, device: torch.device) -> float:
    begin = time.perf_counter()
    call(index)
    synchronize(device)
    return (time.perf_counter() - begin) * 1e3


def measure(call: Callable[[int], object], device: torch.device, rotations: int, policy: TimingPolicy) -> Timing:
    """Time ``call(i)``, where i selects input set i % rotations.

    Warm-up runs every input set once and goes on for ``policy.warmup_s``; the number of timed calls is chosen from
    the warm-up's pace to fill ``policy.budget_s``, within [min_reps, max_reps].
    """
    reps = _repetitions(call, device, rotations, policy)
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for rep in range(reps):
            starts[rep].record()
            call(rep % rotations)
            ends[rep].record()
        torch.cuda.synchronize(device)
        return summarize([s.elapsed_time(e) for s, e in zip(starts, ends)])
    return summarize([_host_time_ms(call, rep % rotations, device) for rep in range(reps)])


def measure_interleaved(calls: dict[str, Callable[[int], object]], device: torch.device, rotations: int,
                        policy: TimingPolicy) -> dict[str, Timing | Exception]:
    """Time several providers' ``call(i)`` by the host clock, in turn: A B C A B C ... So a machine whose speed
    drifts while they are timed (a shared host: another tenant's load coming and going) moves them all alike, and
    their ratios hold where timing one after the other let the drift into the ratio (the g2p step's reference moved
    by 15 % between runs on a shared 2-core machine, 2026-12-05).

    Each is warmed up as ``measure`` does and gets the calls its own pace fills ``policy.budget_s`` with; one that
    has them sits the later rounds out. A call that raises ends that provider's timing: its entry is the exception.
    """
    results: dict[str, Timing | Exception] = {}
    reps = {}
    for name, call in calls.items():
        try:
            reps[name] = _repetitions(call, device, rotations, policy)
        except Exception as error:  # noqa: BLE001 - reported for this provider; the others go on
            results[name] = error
    times: dict[str, list[float]] = {name: [] for name in reps}
    while any(len(times[name]) < reps[name] for name in reps):
        for name in reps:
            done = len(times[name])
            if done >= reps[name]:  # its calls made, or stopped by an error (reps cut to what it made)
                continue
            try:
                times[name].append(_host_time_ms(calls[name], done % rotations, device))
            except Exception as error:  # noqa: BLE001
                results[name] = error
                reps[name] = done
    for name in reps:
        if name not in results:
            results[name] = summarize(times[name])
    return {name: results[name] for name in calls}


@dataclass(frozen=True)
class SideBySide:
    """What ``alternate_blocks`` measured: per setting, the milliseconds a call took in each round (a block's mean)."""

    times_ms: dict[str, list[float]]

    def median_ms(self, name: str) -> float:
        return quantile(self.times_ms[name], 0.5)

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """Per round, ``numerator``'s time over ``denominator``'s: the two were timed next to each other."""
        return [a / b for a, b in zip(self.times_ms[numerator], self.times_ms[denominator])]

    def ratio_line(self, numerator: str, denominator: str) -> str:
        """``numerator``/``denominator`` as "median (min-max)" over the rounds' ratios."""
        ratios = self.ratios(numerator, denominator)
        return f"{numerator}/{denominator} {quantile(ratios, 0.5):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def block_size(call: Callable[[], object], seconds: float, device: torch.device, least: int = 3) -> int:
    """How many calls of ``call`` fill about ``seconds`` (at least ``least``), from the pace of one call after one
    warm-up call."""
    call()
    synchronize(device)
    begin = time.perf_counter()
    call()
    synchronize(device)
    return max(least, int(seconds / max(time.perf_counter() - begin, 1e-6)))


def alternate_blocks(calls: dict[str, Callable[[], object]], block: int, rounds: int,
                     device: torch.device = torch.device("cpu")) -> SideBySide:
    """Time settings side by side in one process, for an A/B of a switch (a library, a routing rule, a thread
    count) that each call sets itself: after one untimed call of each (lazy set-up, a cold cache), every round runs
    each call ``block`` times in a row, in turn, the order reversed every other round (A B, B A, ...), so drift and
    the cost of flipping the switch fall on both alike.
    Compare settings through ``SideBySide.ratios``, round by round; medians of separate runs on a shared machine
    scatter more than the ratios do (benchmarks/results/*/notes.md)."""
    if block < 1 or rounds < 1 or not calls:
        raise ValueError(f"alternate_blocks needs calls, block >= 1 and rounds >= 1, got {len(calls)} calls, "
                         f"block {block}, rounds {rounds}")
    for call in calls.values():  # each setting's first call (lazy set-up, a cold cache) falls outside the rounds
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds):
        for name in (list(calls) if round_ % 2 == 0 else list(reversed(calls))):
            synchronize(device)
            begin = time.perf_counter()
            for _ in range(block):
                calls[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - begin) / block * 1e3)
    return SideBySide(times)


def peak_memory_bytes(run: Callable[[], object], device: torch.device) -> int | None:
    """Peak GPU memory allocated during one ``run()`` above what was allocated before it; None off the GPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - baseline)


def _storage_key(tensor: torch.Tensor):
    try:
        return (tensor.device.type, tensor.device.index, tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("tensor", id(tensor))


def _storage_bytes(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return tensor.numel() * tensor.element_size()


def saved_for_backward_bytes(forward: Callable[[], object], owned: Iterable[torch.Tensor]) -> int:
    """Bytes autograd keeps for backward when ``forward()`` runs, counted once per storage.

    Storages of ``owned`` tensors (the benchmark's inputs, parameters, optimizer state) are left out: they exist
    anyway, so the count is the memory the forward adds until backward runs. A saved view keeps its whole storage.
    """
    excluded = {_storage_key(t) for t in owned}
    saved: dict = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            saved[key] = _storage_bytes(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        graph = forward()
    del graph
    return sum(saved.values())
