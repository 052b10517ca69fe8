"""The benchmark suite behind ``s2s-fast bench``: speed and memory of every provider against the reference.

Layout: ``cases`` lists what runs at which sizes (``ops`` for the functional ops, ``models`` for the Seq2Seq model
end to end), ``timing`` measures, ``floors`` measures the machine's rates and turns work into the performance model's
floors, ``suite`` checks and times each (case, provider), ``report`` writes the table, JSON, Markdown and plots.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import torch

from ..backends import check_matmul_precision, float32_matmul_precision, resolve_device
from ..files import locked_directory
from .cases import build_cases
from .floors import best_rates, measure_rates
from .report import (PARTIAL_RESULTS, evaluate_targets, keep_cut_short_results, metadata, prepare_output_dir,
                     publish_outputs, target_lines, text_table, write_json)
from .suite import STATUSES, SuiteOptions, apply_floors, run_suite, select
from .timing import FULL_CPU, FULL_GPU, QUICK, TimingPolicy

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

__all__ = ["DTYPES", "STATUSES", "run_benchmarks"]


def _finish_records(records: list[dict], rates, meta: dict) -> None:
    """Floors from the rates, and the run's metadata and floor inputs, into every record."""
    apply_floors(records, rates)
    for record in records:
        record.update(meta)
        record["floor_inputs"] = rates.to_dict()


def _measure(cases, options: SuiteOptions, device: torch.device, dtype: torch.dtype, quick: bool, threads,
             matmul_precision: str | None, partial_path: Path):
    """(records, rates, metadata) of the run: the machine's rates, every case, the rates again; torch's threads set
    to ``threads`` and its float32 matmul precision to ``matmul_precision`` meanwhile, and after every case the
    records so far written to ``partial_path``."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with float32_matmul_precision(matmul_precision):
            options.log(f"bench: measuring this machine's copy bandwidth, tanh rate and matmul rate on {device}")
            rates = measure_rates(device, dtype, quick)
            meta = metadata(device, dtype, quick)

            def save_partial(records_so_far: list[dict]) -> None:
                # A run cut short (a job's time limit) still leaves every finished case, in a file of its own: the
                # outputs of an earlier run there stay whole until this one has all of its own.
                _finish_records(records_so_far, rates, meta)
                write_json(records_so_far, partial_path)

            options.progress = save_partial
            records = run_suite(cases, options)
            options.log("bench: measuring the rates again (the floors use the better of both measurements)")
            rates = best_rates(rates, measure_rates(device, dtype, quick))
            meta = metadata(device, dtype, quick)
    finally:
        torch.set_num_threads(previous_threads)
    _finish_records(records, rates, meta)
    return records, rates, meta


def _check_settings(threads, time_limit_s, dtype, matmul_precision) -> None:
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"bench: threads must be a positive integer, got {threads!r}")
    if time_limit_s is not None and not 0 < time_limit_s < float("inf"):  # NaN fails it too
        raise ValueError(f"bench: the time limit must be a positive number of seconds, got {time_limit_s!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"bench: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_matmul_precision(matmul_precision, "bench: matmul precision")


def run_benchmarks(quick: bool = False, device: str = "auto", output_dir: str | Path = "bench-results",
                   dtype: str | None = None, pattern: str | None = None, providers: list[str] | None = None,
                   time_limit_s: float | None = None, threads: int | None = None,
                   matmul_precision: str | None = None, policy: TimingPolicy | None = None, out=None,
                   log=None) -> list[dict]:
    """Run the suite and write its outputs to ``output_dir``; returns the records (also in results.json).

    Args:
        quick: one small size per case (minutes on a CPU) instead of the full size range.
        device: "auto" (cuda when present), "cpu" or "cuda".
        dtype: "float32", "bfloat16" or "float16"; default bfloat16 on a GPU (the targets' dtype), float32 on a CPU.
        pattern: regular expression selecting benchmarks by name. providers: run only these (plus the reference).
        time_limit_s: cases not started within this many seconds are reported unavailable.
        threads: torch's CPU threads during a CPU run; default 1, which gives per-core numbers that hold on a
            machine shared with other work (with more threads, parallel regions stall on descheduled threads).
        matmul_precision: torch.set_float32_matmul_precision for the run ("highest", "high", "medium"; default as
            the process has it). Float32 results are then checked with the tolerances of the type their products may
            run in (on a CPU bfloat16 for medium, TF32 for high; on a GPU TF32 for both), and the outputs name the
            setting.
        policy: timing budget per measurement (default by mode and device).
    """
    started = time.perf_counter()
    out = sys.stdout if out is None else out
    run_device = resolve_device(device)
    _check_settings(threads, time_limit_s, dtype, matmul_precision)
    run_dtype = DTYPES[dtype] if dtype else (torch.bfloat16 if run_device.type == "cuda" else torch.float32)
    cases = select(build_cases(run_device, run_dtype, quick), pattern)
    if not cases:
        raise ValueError(f"bench: no benchmark name matches {pattern!r}")
    known = list(dict.fromkeys(name for case in cases for name in case.providers()))
    unknown = [name for name in providers or [] if name not in known]
    if unknown:
        raise ValueError(f"bench: unknown provider(s) {', '.join(unknown)}; the selected benchmarks have "
                         f"{', '.join(known)}")
    if policy is None:
        policy = QUICK if quick else (FULL_GPU if run_device.type == "cuda" else FULL_CPU)
    options = SuiteOptions(policy=policy, providers=providers, time_limit_s=time_limit_s)
    if log is not None:
        options.log = log
    if threads is None and run_device.type == "cpu":
        threads = 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if run_device.type == "cpu" and threads > 1 and load > (os.cpu_count() or 1) - threads:
        options.log(f"bench: the CPU is busy (load {load:.1f} on {os.cpu_count()} cores): with {threads} threads, "
                    "parallel regions stall on descheduled threads and times scatter")
    output_dir = Path(output_dir)
    prepare_output_dir(output_dir)
    # One run at a time in a directory: another's would move this one's partial results away and race it to
    # publish.
    with locked_directory(output_dir, "s2s-fast bench"):
        cut_short = keep_cut_short_results(output_dir)
        if cut_short is not None:
            options.log(f"bench: the results of a run cut short in {output_dir} moved to {cut_short}")
        # cuda:N the current device while measuring: events, graph captures and Triton launches take the current
        # device's stream, and on cuda:0's the events of a run on cuda:1 bracketed none of its work.
        with torch.cuda.device(run_device) if run_device.type == "cuda" else contextlib.nullcontext():
            records, rates, meta = _measure(cases, options, run_device, run_dtype, quick, threads, matmul_precision,
                                            output_dir / PARTIAL_RESULTS)
        evaluations = evaluate_targets(records, meta)
        paths, kept = publish_outputs(records, meta, rates, evaluations, output_dir)
        if kept is not None:
            options.log(f"bench: the earlier run's outputs in {output_dir} moved to {kept}")
        (output_dir / PARTIAL_RESULTS).unlink(missing_ok=True)
    print(text_table(records, meta, rates), file=out)
    print("\n".join(target_lines(evaluations, meta)), file=out)
    counts = {status: sum(r["status"] == status for r in records) for status in STATUSES}
    print(f"\n{len(records)} records ({', '.join(f'{n} {s}' for s, n in counts.items())}) in "
          f"{time.perf_counter() - started:.0f} s; written: {', '.join(str(p) for p in paths.values())}", file=out)
    return records
