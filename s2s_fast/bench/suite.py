"""Runs the cases: checks every provider against the reference on the case's own inputs, then times it.

Per (case, provider) the suite records one of three statuses: "unavailable" (the provider cannot run here; the
reason is kept), "failed" (its outputs or gradients disagree with the reference beyond s2s_fast.testing's tolerances,
or it raised; it is not timed), or "ok" with its timing, tokens per second, speedup over reference eager, % of the
floor, peak GPU memory and bytes saved for backward.
"""

from __future__ import annotations

import functools
import gc
import math
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..testing import LOW_PRECISION_ERROR_RATIO, checked_dtype, relative_error, tolerance
from .base import COMPILE, LOW_PRECISION, Case, Unavailable, tensor_bytes
from .floors import MachineRates, Work, cache_bytes, count_work, floor_seconds
from .timing import (TimingPolicy, measure, measure_interleaved, peak_memory_bytes, saved_for_backward_bytes,
                     synchronize)

STATUSES = ("ok", "failed", "unavailable")
# A case whose reference would need more than this share of the free memory is not run.
_MEMORY_SHARE = 0.8


@dataclass
class SuiteOptions:
    policy: TimingPolicy
    providers: list[str] | None = None  # run only these (the reference always runs: it is the baseline)
    time_limit_s: float | None = None  # cases not started by then are reported unavailable
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    progress: Callable[[list[dict]], None] | None = None  # called with the records so far after each case


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def compare(actual: dict, expected: dict, gold: Callable[[], dict] | None,
            dtype: torch.dtype) -> tuple[float, str | None, str | None]:
    """Compare a provider's results with the reference's; returns (largest relative error, mismatch or None,
    accuracy note or None).

    A value passes within the dtype's tolerance of the reference; else it also passes when its error against the
    reference computed in a wider dtype (``gold()``, asked for only then) is at most LOW_PRECISION_ERROR_RATIO times the
    reference's own plus one unit of the dtype's rounding (the rule of
    s2s_fast.testing.compare_low_precision_with_reference): a gradient summed over millions of float32 terms differs
    from the reference's by more than the elementwise tolerance even when it is as accurate. A float32 or float64 value
    past that rule but within the dtype's relative tolerance of the wide result (largest difference over largest
    magnitude) is less accurate, not wrong (torch's own CPU LSTM sums its bias gradients over T*B terms in order: 25
    times the reference's float32 error at T*B = 32768): it passes with a note that says by how much.
    """
    tol = tolerance(dtype)
    worst = 0.0
    notes = []
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return worst, f"{name} is missing from its results", None
        if tuple(got.shape) != tuple(want.shape):
            return worst, f"{name} has shape {list(got.shape)}, the reference {list(want.shape)}", None
        if not want.is_floating_point():
            if not torch.equal(got, want):
                return worst, f"{name} differs from the reference", None
            continue
        got, want = got.detach().float(), want.detach().float()
        error = relative_error(got, want)
        error = math.inf if math.isnan(error) else error
        worst = max(worst, error)
        if bool((torch.isfinite(got) != torch.isfinite(want)).any()):
            return worst, f"{name} has non-finite values where the reference has none (or the reverse)", None
        if bool(torch.isclose(got, want, rtol=tol["rtol"], atol=tol["atol"], equal_nan=True).all()):
            continue
        if gold is None or name not in gold():
            return worst, (f"{name} disagrees with the reference: largest difference {error:.2e} of its largest "
                           f"magnitude, elementwise tolerance rtol {tol['rtol']:g}, atol {tol['atol']:g}"), None
        wide = gold()[name]
        own, reference = relative_error(got, wide), relative_error(want, wide)
        if own <= LOW_PRECISION_ERROR_RATIO * reference + torch.finfo(dtype).eps:
            continue
        against = (f"its error against the {wide.dtype} result is {own:.2e} of its largest magnitude, the "
                   f"reference's {reference:.2e}")
        if dtype not in LOW_PRECISION and own <= tol["rtol"]:
            notes.append(f"{name} less accurate than the reference: {against}")
            continue
        past_rtol = "" if dtype in LOW_PRECISION else f", or up to rtol {tol['rtol']:g}"
        return worst, (f"{name} disagrees with the reference: {against} (allowed: "
                       f"{LOW_PRECISION_ERROR_RATIO:g}x the reference's{past_rtol})"), None
    return worst, None, "; ".join(notes) or None


def _free_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rotations(case: Case, inputs: dict) -> int:
    """Input sets to rotate among so that together they overflow the cache twice (at most case.max_rotations)."""
    size = max(1, tensor_bytes({k: v for k, v in inputs.items() if k != "upstream"}))
    return max(1, min(case.max_rotations, math.ceil(2 * cache_bytes(case.device) / size)))


def _base_record(case: Case) -> dict:
    return {
        "benchmark": case.name, "family": case.family, "direction": case.direction, "group": case.group,
        "sizes": dict(case.sizes), "size_label": case.size_label, "dtype": str(case.dtype).removeprefix("torch."),
        "target": case.target, "status": None, "reason": None, "note": None,
        "median_ms": None, "q20_ms": None, "q80_ms": None, "repetitions": None, "rotations": None,
        "tokens_per_call": case.tokens(), "tokens_per_s": None, "speedup_vs_reference": None,
        "floor_ms": None, "floor_bound": None, "percent_of_floor": None, "work": None,
        "peak_memory_bytes": None, "saved_for_backward_bytes": None, "compile_s": None, "max_relative_error": None,
    }


def _unavailable_all(case: Case, providers: list[str], reason: str) -> list[dict]:
    return [dict(_base_record(case), provider=p, status="unavailable", reason=reason) for p in providers]


def run_case(case: Case, options: SuiteOptions) -> list[dict]:
    """Check and time every provider of ``case``; one record per provider."""
    providers = [p for p in case.providers() if p == "reference" or options.providers is None
                 or p in options.providers]
    device = case.device
    free = _free_memory(device)
    needed = case.working_set_bytes()
    if case.dtype in LOW_PRECISION:
        # The float32 reference that checks low-precision providers needs proportionally more.
        needed *= 4 // torch.empty((), dtype=case.dtype).element_size()
    if free is not None and needed > _MEMORY_SHARE * free:
        return _unavailable_all(case, providers, f"not run: needs about {needed / 2**30:.1f} GiB, "
                                                 f"{free / 2**30:.1f} GiB free on {device.type}")
    if COMPILE in providers:
        torch._dynamo.reset()
    input_sets = [case.make_inputs(seed=0)]
    try:
        reference = case.prepare("reference", input_sets[0])
        expected = reference.results()
        gold = functools.cache(lambda: case.gold(input_sets[0]).results())
        specials, flops = count_work(reference.run)
    except Exception as error:  # noqa: BLE001 - a broken reference is reported, and nothing else is run
        records = _unavailable_all(case, providers, "not run: the reference failed")
        records[0].update(status="failed", reason=_first_line(error))
        return records
    work = Work(case.min_bytes(input_sets[0], expected), specials, flops)
    rotation_count = rotations(case, input_sets[0])
    input_sets += [case.make_inputs(seed=k) for k in range(1, rotation_count)]
    records, pending = [], {}
    check_dtype = checked_dtype(case.dtype, device)  # the tolerances of the products' type at the setting in force
    for provider in providers:
        record = dict(_base_record(case), provider=provider, work=work.to_dict())
        records.append(record)
        runners = _check_and_prepare(case, provider, record, reference, expected, gold, input_sets, check_dtype)
        if runners is None:
            continue
        if device.type == "cuda":  # one provider at a time: each has the GPU's memory to itself
            _time_provider(case, record, runners, options)
            runners = None
            _release(device)
        else:
            pending[provider] = runners
    if pending:  # on a CPU, in turn: a shared machine's drift moves every provider alike
        calls = {provider: functools.partial(_run_rotation, runners) for provider, runners in pending.items()}
        timings = measure_interleaved(calls, device, rotation_count, options.policy)
        for record in records:
            if record["provider"] in timings:
                _record_timing(case, record, timings[record["provider"]], rotation_count)
        pending = calls = None
        _release(device)
    baseline = records[0]["median_ms"] if records[0]["status"] == "ok" else None
    for record in records:
        if record["status"] == "ok" and baseline is not None:
            record["speedup_vs_reference"] = baseline / record["median_ms"]
    return records


def _run_rotation(runners: list, index: int):
    return runners[index].run()


def _check_and_prepare(case: Case, provider: str, record: dict, reference, expected: dict, gold,
                       input_sets: list[dict], check_dtype: torch.dtype) -> list | None:
    """The provider's runners, one per input set, once its results agree with the reference's within
    ``check_dtype``'s tolerances (and its peak GPU memory and bytes saved for backward are in ``record``); None,
    with the record's status set, when it is unavailable, disagrees or raises."""
    device = case.device
    try:
        runner = reference if provider == "reference" else case.prepare(provider, input_sets[0])
        record.update(note=runner.note, compile_s=runner.first_call_s)
        if provider != "reference":
            record["max_relative_error"], mismatch, accuracy = compare(runner.results(), expected, gold, check_dtype)
            if mismatch is not None:
                record.update(status="failed", reason=mismatch)
                return None
            if accuracy is not None:
                record["note"] = "; ".join(filter(None, (record["note"], accuracy)))
        runners = [runner] + [case.prepare(provider, inputs) for inputs in input_sets[1:]]
        record["peak_memory_bytes"] = peak_memory_bytes(runner.run, device)
        if runner.graph_memory_bytes is not None:  # a graph's replay shows none of its own working memory
            record["peak_memory_bytes"] = max(record["peak_memory_bytes"] or 0, runner.graph_memory_bytes)
        if case.backward and runner.forward_with_graph is not None:
            record["saved_for_backward_bytes"] = saved_for_backward_bytes(runner.forward_with_graph, runner.owned())
        synchronize(device)
        return runners
    except Exception as error:  # noqa: BLE001 - a provider that raises is a finding, recorded as failed
        _record_timing(case, record, error, len(input_sets))
        _release(device)
        return None


def _time_provider(case: Case, record: dict, runners: list, options: SuiteOptions) -> None:
    try:
        timing = measure(functools.partial(_run_rotation, runners), case.device, len(runners), options.policy)
    except Exception as error:  # noqa: BLE001
        timing = error
    _record_timing(case, record, timing, len(runners))


def _record_timing(case: Case, record: dict, timing, rotation_count: int) -> None:
    """A provider's record from its Timing, or from what it raised (unavailable, out of memory: unavailable too;
    anything else: failed)."""
    if isinstance(timing, Unavailable):
        record.update(status="unavailable", reason=str(timing))
    elif isinstance(timing, torch.cuda.OutOfMemoryError):
        record.update(status="unavailable", reason=f"out of GPU memory: {_first_line(timing)}")
    elif isinstance(timing, Exception):
        record.update(status="failed", reason=_first_line(timing))
    else:
        record.update(status="ok", median_ms=timing.median_ms, q20_ms=timing.q20_ms, q80_ms=timing.q80_ms,
                      repetitions=timing.repetitions, rotations=rotation_count,
                      tokens_per_s=case.tokens() / (timing.median_ms / 1e3))


def select(cases: list[Case], pattern: str | None) -> list[Case]:
    """Cases whose name matches the regular expression ``pattern`` (all when None)."""
    if pattern is None:
        return cases
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"--filter {pattern!r} is not a regular expression: {error}") from None
    return [case for case in cases if regex.search(case.name)]


def apply_floors(records: list[dict], rates: MachineRates) -> None:
    """Fill in each record's floor (from its work and the machine's rates) and, where timed, its % of the floor."""
    for record in records:
        if record["work"] is None:
            continue
        floor_s, bound = floor_seconds(Work(**record["work"]), rates)
        record.update(floor_ms=floor_s * 1e3, floor_bound=bound)
        if record["median_ms"] is not None:
            record["percent_of_floor"] = 100.0 * record["floor_ms"] / record["median_ms"]


def run_suite(cases: list[Case], options: SuiteOptions) -> list[dict]:
    """Run ``cases`` (those a target names first, so a time limit cuts the others); records in ``cases`` order."""
    started = time.perf_counter()
    order = sorted(range(len(cases)), key=lambda index: cases[index].target is None)
    results: dict[int, list[dict]] = {}
    for position, index in enumerate(order, 1):
        case = cases[index]
        elapsed = time.perf_counter() - started
        if options.time_limit_s is not None and elapsed > options.time_limit_s:
            providers = [p for p in case.providers() if p == "reference" or options.providers is None
                         or p in options.providers]
            results[index] = _unavailable_all(case, providers, f"not run: the time limit of "
                                                               f"{options.time_limit_s:g} s was reached")
            continue
        options.log(f"[{position}/{len(cases)} {elapsed:6.1f} s] {case.name} ({str(case.dtype)[6:]})")
        results[index] = run_case(case, options)
        _release(case.device)
        if options.progress is not None:
            options.progress([record for done in sorted(results) for record in results[done]])
    return [record for index in range(len(cases)) for record in results[index]]
