"""Reporting: run metadata, the stdout table, results.json, results.md, summary.json and PNG plots."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from ..backends import matmul_precision_record
from .base import COMPILE, GRAPH_SUFFIX, TORCH_NN, backend_providers
from .cases import TARGET_DEVICE, TARGET_DTYPE, TARGETS
from .floors import MachineRates

_MIB = float(1 << 20)


def _cpu_name() -> str:
    """The CPU's model name, its core count and the instruction set torch's kernels use: two machines sold under one
    name (an AMD EPYC with AVX-512, another with AVX2 only) differ by 3x in float32 products."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()})"


def _git_commit() -> str:
    """The commit of the source tree this package runs from, "+dirty" when tracked files changed, else unknown."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def metadata(device: torch.device, dtype: torch.dtype, quick: bool) -> dict:
    """What every record carries: device, versions, commit, date, mode, dtype and the float32 matmul precision in
    force."""
    precision, note = matmul_precision_record(device)
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "device_type": device.type,
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "git_commit": _git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "run_dtype": str(dtype).removeprefix("torch."),
        "cpu_threads": torch.get_num_threads(),
        "matmul_precision": precision,
        "matmul_precision_note": note or None,
    }


def dtype_label(meta: dict) -> str:
    """The run's dtype, with its float32 matmul precision where that is not torch's default."""
    note = meta.get("matmul_precision_note")
    return f"{meta['run_dtype']}, {note}" if note else meta["run_dtype"]


def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def floor_lines(rates: MachineRates) -> list[str]:
    methods = rates.methods
    return [f"copy bandwidth {_rate(rates.copy_bytes_per_s, 'B/s')} ({methods['copy']})",
            f"special functions {_rate(rates.special_functions_per_s, 'tanh/s')} ({methods['special_functions']})",
            f"matmul {_rate(rates.matmul_flops_per_s, 'FLOP/s')} ({methods['matmul']})"]


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _count(value) -> str:
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _mib(value) -> str:
    return "-" if value is None else f"{value / _MIB:.3g}"


_REASON_CHARS = 160
_BEYOND_FLOOR = ("* above 100%: this provider beat a rate measured in this run, so that rate was not this machine's "
                 "ceiling (on a CPU, tanh is software whose speed depends on its implementation; on a shared "
                 "machine, rates move with the neighbours' load)")


def _percent(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}%" + ("*" if value > 100 else "")


def _row_cells(record: dict) -> list[str]:
    if record["status"] != "ok":
        reason = record["reason"] or ""
        return [record["provider"], record["status"],
                reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS - 3] + "..."]
    spread = f"{_ms(record['q20_ms'])}-{_ms(record['q80_ms'])}"
    speedup = "-" if record["speedup_vs_reference"] is None else f"{record['speedup_vs_reference']:.2f}x"
    floor = _percent(record["percent_of_floor"])
    compile_s = "-" if record["compile_s"] is None else f"{record['compile_s']:.1f}"
    return [record["provider"], "ok", _ms(record["median_ms"]), spread, _count(record["tokens_per_s"]), speedup,
            floor, _mib(record["peak_memory_bytes"]), _mib(record["saved_for_backward_bytes"]), compile_s,
            record["note"] or ""]


_HEADER = ["provider", "status", "median ms", "q20-q80 ms", "tokens/s", "speedup", "% floor", "peak MiB",
           "saved MiB", "compile s", "note"]


def _by_benchmark(records: list[dict]) -> list[tuple[str, list[dict]]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(record["benchmark"], []).append(record)
    return list(grouped.items())


def _short_commit(meta: dict) -> str:
    """The run's commit in 12 digits, and "+dirty" where the tree had changes, as the files record it."""
    commit = meta["git_commit"]
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def text_table(records: list[dict], meta: dict, rates: MachineRates) -> str:
    """The table printed on stdout: per benchmark, one line per provider (a reason instead of numbers when it did
    not run)."""
    lines = [f"s2s_fast benchmarks on {meta['device']} ({meta['device_type']}), {meta['mode']} mode, "
             f"{dtype_label(meta)}, torch {meta['torch_version']}, triton {meta['triton_version']}, "
             f"commit {_short_commit(meta)}, {meta['date']}",
             "floor inputs: " + "; ".join(floor_lines(rates)), ""]
    cells = [_HEADER] + [_row_cells(record) for record in records if record["status"] == "ok"]
    widths = [max(len(row[column]) for row in cells) for column in range(len(_HEADER) - 1)]
    widths[1] = max(widths[1], len("unavailable"))

    def line(row: list[str]) -> str:
        return ("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()

    for benchmark, rows in _by_benchmark(records):
        first = rows[0]
        floor = (f"floor {_ms(first['floor_ms'])} ms ({first['floor_bound']})" if first["floor_ms"] is not None
                 else "floor not measured")
        lines.append(f"{benchmark}  {first['dtype']}  {floor}  {first['tokens_per_call']} tokens/call")
        lines.append(line(_HEADER))
        for record in rows:
            row = _row_cells(record)
            if record["status"] == "ok":
                lines.append(line(row))
            else:
                lines.append("  " + row[0].ljust(widths[0]) + "  " + row[1].ljust(widths[1]) + "  " + row[2])
        lines.append("")
    if any((record["percent_of_floor"] or 0) > 100 for record in records):
        lines.append(_BEYOND_FLOOR)
    return "\n".join(lines)


def _ok_row(rows: list[dict], provider: str):
    for row in rows:
        if row["provider"] == provider and row["status"] == "ok":
            return row
    return None


def _check(name: str, value, goal, at_least: bool = True) -> dict:
    met = None if value is None or goal is None else (value >= goal if at_least else value <= goal)
    return {"name": name, "value": value, "goal": goal, "at_least": at_least, "met": met}


def _ratio(numerator, denominator):
    return None if numerator is None or not denominator else numerator / denominator


def evaluate_targets(records: list[dict], meta: dict) -> list[dict]:
    """Each target's ratios for every fused provider (triton, cuda, cpu and their CUDA-graph variants) of its case;
    not aten's, which is torch's own kernels (cuDNN, oneDNN): graded against torch.nn it would meet "at least as fast
    as cuDNN" by being cuDNN, within the timing noise."""
    by_case = dict(_by_benchmark(records))
    fused_names = set(backend_providers()) - {"aten"}
    evaluations = []
    for target in TARGETS:
        rows = by_case.get(target.case_name)
        evaluation = {"target": target.key, "text": target.text, "benchmark": target.case_name, "providers": []}
        evaluations.append(evaluation)
        if not rows:
            evaluation["summary"] = "not run in this mode or selection"
            continue
        evaluation["on_target_machine"] = (TARGET_DEVICE in meta["device"]
                                           and rows[0]["dtype"] == str(TARGET_DTYPE).removeprefix("torch."))
        reference, compiled, torch_nn = (_ok_row(rows, name) or {} for name in ("reference", COMPILE, TORCH_NN))
        evaluation["baselines"] = {row["provider"]: {key: row[key] for key in ("status", "reason", "median_ms",
                                                                               "peak_memory_bytes")}
                                   for row in rows if row["provider"] in ("reference", COMPILE, TORCH_NN)}
        for row in rows:
            if row["provider"].removesuffix(GRAPH_SUFFIX) not in fused_names:
                continue
            entry = {"provider": row["provider"], "status": row["status"], "reason": row["reason"], "checks": []}
            evaluation["providers"].append(entry)
            if row["status"] != "ok":
                continue
            checks = entry["checks"]
            if target.min_speedup_vs_reference is not None:
                checks.append(_check("speedup vs reference eager", row["speedup_vs_reference"],
                                     target.min_speedup_vs_reference))
            if target.min_speedup_vs_compile is not None:
                checks.append(_check("speedup vs torch.compile", _ratio(compiled.get("median_ms"), row["median_ms"]),
                                     target.min_speedup_vs_compile))
            if target.max_peak_memory_vs_reference is not None:
                checks.append(_check("peak memory / reference's",
                                     _ratio(row["peak_memory_bytes"], reference.get("peak_memory_bytes")),
                                     target.max_peak_memory_vs_reference, at_least=False))
                saved = _ratio(row["saved_for_backward_bytes"], reference.get("saved_for_backward_bytes"))
                if saved is not None:
                    checks.append(_check("saved for backward / reference's (context)", saved, None))
            if target.min_speedup_vs_torch_nn is not None:
                torch_nn_kernels = " (cuDNN)" if meta["device_type"] == "cuda" else ""
                checks.append(_check(f"speedup vs torch.nn{torch_nn_kernels}",
                                     _ratio(torch_nn.get("median_ms"), row["median_ms"]),
                                     target.min_speedup_vs_torch_nn))
        if not evaluation["providers"]:
            evaluation["summary"] = ("no fused provider was run (--providers left them out)" if fused_names
                                     else "no fused provider is registered")
    return evaluations


def _format_check(check: dict) -> str:
    if check["goal"] is None:
        return f"{check['name']} {check['value']:.3g}"
    sign = ">=" if check["at_least"] else "<="
    if check["value"] is None:
        return f"{check['name']}: not measured here (goal {sign} {check['goal']:.3g})"
    verdict = "met" if check["met"] else "NOT met"
    return f"{check['name']} {check['value']:.3g} (goal {sign} {check['goal']:.3g}: {verdict})"


def target_lines(evaluations: list[dict], meta: dict) -> list[str]:
    lines = [f"Targets (stated for an {TARGET_DEVICE} in {str(TARGET_DTYPE).removeprefix('torch.')}; this run: "
             f"{meta['device']}, {dtype_label(meta)}):"]
    for evaluation in evaluations:
        lines.append(f"- {evaluation['text']}")
        if evaluation.get("on_target_machine") is False and any(e["checks"] for e in evaluation["providers"]):
            lines.append("    (not the target's machine or dtype: the verdicts below are indicative only)")
        if "summary" in evaluation:
            lines.append(f"    {evaluation['summary']}")
        baselines = []
        for provider, row in evaluation.get("baselines", {}).items():
            if row["status"] == "ok":
                peak = "" if row["peak_memory_bytes"] is None else f", peak {row['peak_memory_bytes'] / _MIB:.4g} MiB"
                baselines.append(f"{provider} {_ms(row['median_ms'])} ms{peak}")
            else:
                baselines.append(f"{provider} {row['status']}")
        if baselines:
            lines.append("    baselines: " + "; ".join(baselines))
        for entry in evaluation["providers"]:
            if entry["status"] != "ok":
                reason = entry["reason"] or ""
                reason = reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS - 3] + "..."
                lines.append(f"    {entry['provider']}: {entry['status']} ({reason})")
            else:
                lines.append(f"    {entry['provider']}: " + "; ".join(_format_check(c) for c in entry["checks"]))
    return lines


def markdown(records: list[dict], meta: dict, rates: MachineRates, evaluations: list[dict]) -> str:
    """results.md: metadata, floor inputs, targets, and one table per benchmark family and direction."""
    lines = ["# s2s_fast benchmarks", "",
             f"{meta['device']} ({meta['device_type']}), {meta['mode']} mode, {dtype_label(meta)}; torch "
             f"{meta['torch_version']}, triton {meta['triton_version']}, Python {meta['python_version']}; commit "
             f"`{meta['git_commit']}`; {meta['date']}.", "",
             "Floor inputs measured in this run: " + "; ".join(floor_lines(rates)) + ".", "",
             "## Targets", "", *target_lines(evaluations, meta)[1:], "", "## Results", "",
             summary_table(records), ""]
    return "\n".join(lines)


def summary_table(records: list[dict]) -> str:
    """One Markdown table of the providers that ran, then the unavailable and failed ones with their reasons."""
    lines = ["| benchmark | provider | median ms (q20-q80) | tokens/s | speedup | % of floor (bound) | peak MiB "
             "| saved MiB | compile s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    others: dict[tuple, list[str]] = {}
    for record in records:
        if record["status"] != "ok":
            others.setdefault((record["provider"], record["status"], record["reason"]), []).append(
                record["benchmark"])
            continue
        speedup = "-" if record["speedup_vs_reference"] is None else f"{record['speedup_vs_reference']:.2f}x"
        note = f" ({record['note']})" if record["note"] else ""
        compile_s = "-" if record["compile_s"] is None else f"{record['compile_s']:.1f}"
        lines.append(f"| `{record['benchmark']}` {record['dtype']} | {record['provider']}{note} | "
                     f"{_ms(record['median_ms'])} ({_ms(record['q20_ms'])}-{_ms(record['q80_ms'])}) | "
                     f"{_count(record['tokens_per_s'])} | {speedup} | {_percent(record['percent_of_floor'])} "
                     f"({record['floor_bound']}) | {_mib(record['peak_memory_bytes'])} | "
                     f"{_mib(record['saved_for_backward_bytes'])} | {compile_s} |")
    if any((record["percent_of_floor"] or 0) > 100 for record in records):
        lines += ["", "\\" + _BEYOND_FLOOR]
    if others:
        lines += ["", "Not timed:", ""]
        for (provider, status, reason), benchmarks in others.items():
            lines.append(f"- {provider}: {status} in {len(benchmarks)} benchmark(s): {reason}")
    return "\n".join(lines)


def _short_size(row: dict) -> str:
    """The size label without the vocabularies, wrapped to fit under a bar group."""
    words = [f"{key}={value}" for key, value in row["sizes"].items() if key not in ("Vs", "Vt")]
    lines, current = [], ""
    for word in words:
        if current and len(current) + len(word) > 20:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return "\n".join(lines + [current])


def _bar_axes(axes, group_rows: list[dict], value_of, ylabel: str, title: str, baseline: float | None,
              colors: dict[str, object]) -> None:
    """Grouped bars on a log scale: one group per size, one bar per provider (in its colour in ``colors``, the same
    in every panel), drawn from ``baseline`` when given (a speedup of 1) so that bars above and below it read as
    faster and slower."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    sizes = list(dict.fromkeys(row["size_label"] for row in group_rows))
    labels = {row["size_label"]: _short_size(row) for row in group_rows}
    providers = list(dict.fromkeys(row["provider"] for row in group_rows if value_of(row) is not None))
    width = 0.8 / max(1, len(providers))
    bars = {}
    for offset, provider in enumerate(providers):
        for index, size in enumerate(sizes):
            match = [value_of(r) for r in group_rows if r["provider"] == provider and r["size_label"] == size]
            if match and match[0] is not None:
                bars.setdefault(provider, []).append((index + (offset - (len(providers) - 1) / 2) * width, match[0]))
    values = [value for pairs in bars.values() for _, value in pairs]
    if not values:
        return
    bottom = baseline if baseline is not None else min(values) / 4
    for provider, pairs in bars.items():
        axes.bar([x for x, _ in pairs], [value - bottom for _, value in pairs], bottom=bottom, width=width,
                 label=provider, color=colors[provider])
    axes.set_yscale("log")
    axes.set_ylim(min(values + [bottom]) / 1.5, max(values + [bottom]) * 1.5)
    if baseline is not None:
        axes.axhline(baseline, color="black", linewidth=0.8)
    # 1, 2 and 5 of each decade labelled: a range within one or two decades showed a single label.
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xticks(range(len(sizes)))
    axes.set_xticklabels([labels[size] for size in sizes], fontsize=7)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=6)


def plot(records: list[dict], speedup_path: Path, memory_path: Path, meta: dict) -> None:
    """speedup.png (speedup over reference eager by size) and memory.png (peak GPU memory, or bytes saved for
    backward where no peak was measured, by size), one panel per benchmark family and direction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    ok = {name: [r for r in rows if r["status"] == "ok"] for name, rows in groups.items()}

    def memory_value(row):
        value = row["peak_memory_bytes"] if row["peak_memory_bytes"] is not None else row["saved_for_backward_bytes"]
        return None if value is None else max(value, 1) / _MIB

    panels = {
        # The reference is the line at 1, not a bar of no height.
        speedup_path: ("speedup vs reference eager (the line)",
                       lambda row: None if row["provider"] == "reference" else row["speedup_vs_reference"], 1.0, ok),
        memory_path: ("MiB (peak GPU, else saved for backward)", memory_value, None,
                      {name: rows for name, rows in ok.items() if any(memory_value(r) is not None for r in rows)}),
    }
    from matplotlib import colormaps

    providers = list(dict.fromkeys(record["provider"] for record in records))
    cycle = colormaps["tab20"].colors
    colors = {provider: cycle[index % len(cycle)] for index, provider in enumerate(providers)}
    for path, (ylabel, value_of, baseline, selected) in panels.items():
        names = [name for name, rows in selected.items() if rows]
        columns = 3
        rows_count = max(1, -(-len(names) // columns))
        figure = Figure(figsize=(5 * columns, 3.4 * rows_count))
        FigureCanvasAgg(figure)
        figure.suptitle(f"{meta['device']}, {dtype_label(meta)}, {meta['date']}", fontsize=10)
        for index, name in enumerate(names):
            axes = figure.add_subplot(rows_count, columns, index + 1)
            _bar_axes(axes, selected[name], value_of, ylabel, name, baseline, colors)
        if not names:
            figure.add_subplot(1, 1, 1).text(0.5, 0.5, "nothing to plot", ha="center")
        # Room at the top for the figure's title: tight_layout alone put the first row's titles under it.
        figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.4 * rows_count)))
        figure.savefig(path, dpi=90)


def write_json(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(records, indent=1) + "\n")
    partial.replace(path)


# What a finished run writes into its output directory, and what one that is still running (or was cut short)
# leaves there.
OUTPUTS = ("results.json", "summary.json", "results.md", "speedup.png", "memory.png")
PARTIAL_RESULTS = "results.partial.json"
EARLIER = "earlier"


def _mtime_stamp(paths: list[Path]) -> str:
    newest = max(path.stat().st_mtime for path in paths)
    return datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).isoformat(timespec="seconds")


def _move_to_earlier(output_dir: Path, paths: list[Path], stamp: str) -> Path:
    """Move ``paths`` into a new folder ``earlier/<stamp>`` (-2, -3, ... where taken) of ``output_dir``."""
    base = output_dir / EARLIER / stamp.replace(":", "-")
    target, count = base, 1
    while target.exists():
        count += 1
        target = base.with_name(f"{base.name}-{count}")
    target.mkdir(parents=True)
    for path in paths:
        path.rename(target / path.name)
    return target


def keep_earlier_outputs(output_dir: Path) -> Path | None:
    """Move an earlier run's outputs in ``output_dir`` into ``earlier/<its date>/`` there (a run writing into the
    same directory, the default one say, would otherwise replace them); returns that folder, None if there were
    none."""
    found = [output_dir / name for name in OUTPUTS if (output_dir / name).exists()]
    if not found:
        return None
    try:
        stamp = json.loads((output_dir / "summary.json").read_text())["metadata"]["date"]
    except (OSError, ValueError, KeyError, TypeError):
        stamp = None
    return _move_to_earlier(output_dir, found, stamp if isinstance(stamp, str) else _mtime_stamp(found))


def prepare_output_dir(output_dir: Path) -> None:
    """Before anything is measured: ``output_dir`` made and written to (a read-only one failed after the first
    case), and its ``earlier`` a folder. Raises ValueError saying what is wrong."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"bench: --output-dir {output_dir}: {error.strerror}") from None
    earlier = output_dir / EARLIER
    if earlier.exists() and not earlier.is_dir():
        raise ValueError(f"bench: {earlier} is not a folder (the earlier runs' outputs move there)")


def keep_cut_short_results(output_dir: Path) -> Path | None:
    """The partial results of a run cut short in ``output_dir`` moved to ``earlier/<their date>-cut-short/`` (this
    run's own would overwrite them, and its end delete them); returns that folder, None if there were none."""
    partial = output_dir / PARTIAL_RESULTS
    if not partial.exists():
        return None
    return _move_to_earlier(output_dir, [partial], _mtime_stamp([partial]) + "-cut-short")


def publish_outputs(records: list[dict], meta: dict, rates: MachineRates, evaluations: list[dict],
                    output_dir: Path) -> tuple[dict[str, Path], Path | None]:
    """write_outputs into a folder of their own first, then the earlier run's outputs moved to ``earlier/`` and
    these renamed into place: cut short while writing (the plots take a second), the directory keeps the earlier
    run's outputs whole. Returns the outputs' paths and the folder the earlier ones moved to (None: none)."""
    staging = output_dir / f".writing-{os.getpid()}"
    try:
        written = write_outputs(records, meta, rates, evaluations, staging)
        kept = keep_earlier_outputs(output_dir)
        for path in written.values():
            path.rename(output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: output_dir / name for name in written}, kept


def write_outputs(records: list[dict], meta: dict, rates: MachineRates, evaluations: list[dict],
                  output_dir: Path) -> dict[str, Path]:
    """Write results.json (the records), summary.json, results.md and the plots; returns the paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: output_dir / name for name in OUTPUTS}
    write_json(records, paths["results.json"])
    summary = {"metadata": meta, "floor_inputs": rates.to_dict(), "targets": evaluations}
    paths["summary.json"].write_text(json.dumps(summary, indent=1) + "\n")
    paths["results.md"].write_text(markdown(records, meta, rates, evaluations))
    plot(records, paths["speedup.png"], paths["memory.png"], meta)
    return paths
