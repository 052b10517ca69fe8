"""scripts/gpu_check.sh's plumbing, without a GPU (--dry-run): stage order, the budget, what lands in its folder."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import s2s_fast
from s2s_fast.cuda import compiled as cuda_compiled

from scripts_module import load_script

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["environment", "deps", "extension", "gpu_tests", "memcheck", "racecheck", "op_tests", "profile",
          "bench_suite"]


def _dry_run(out, *arguments):
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                           *arguments], capture_output=True, text=True, timeout=120)


def test_dry_run_plans_every_stage_inside_one_device_call(tmp_path):
    result = _dry_run(tmp_path / "out")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [stage["name"] for stage in record["stages"]] == STAGES
    assert all(stage["status"] == "PLANNED" for stage in record["stages"])
    # Even if every stage used its whole limit, the check ends inside its budget, itself inside a 600 s call.
    assert record["budget_s"] <= 570
    assert sum(stage["limit_s"] for stage in record["stages"]) <= record["budget_s"]
    assert all(stage["limit_s"] >= 10 for stage in record["stages"])
    assert "gpu or cuda_kernels" in record["stages"][3]["note"]
    assert "tests/ops" in record["stages"][6]["note"] and "--junitxml" in record["stages"][6]["note"]
    assert "compute-sanitizer" in record["stages"][4]["note"] and "--tool memcheck" in record["stages"][4]["note"]


def test_a_second_call_runs_only_what_it_names(tmp_path):
    """--only keeps the setup stages and the named ones, -k narrows both test stages, --bench-args reaches the
    bench; the selection is recorded; an unknown stage is refused by name."""
    result = _dry_run(tmp_path / "out", "--only", "op_tests,bench_suite", "-k", "aten or rnn_layer",
                      "--bench-args", "--filter '_layer\\.fwd' --providers triton,cuda")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    status = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert status == {"environment": "PLANNED", "deps": "PLANNED", "extension": "PLANNED", "gpu_tests": "SKIP",
                      "memcheck": "SKIP", "racecheck": "SKIP", "op_tests": "PLANNED", "profile": "SKIP",
                      "bench_suite": "PLANNED"}
    notes = {stage["name"]: stage["note"] for stage in record["stages"]}
    assert "tests/ops -k 'aten or rnn_layer' " in notes["op_tests"]
    assert shlex.split(notes["bench_suite"])[-4:] == ["--filter", "_layer\\.fwd", "--providers", "triton,cuda"]
    assert "--only bench_suite,op_tests" in record["selection"] and "aten or rnn_layer" in record["selection"]
    assert "selection: --only" in (tmp_path / "out" / "summary.md").read_text()
    refused = _dry_run(tmp_path / "refused", "--only", "op_test")
    assert refused.returncode == 2 and "unknown stage(s) op_test" in refused.stderr


def test_outputs_fit_what_a_device_call_brings_back(tmp_path):
    out = tmp_path / "out"
    assert _dry_run(out).returncode == 0
    files = [path for path in out.rglob("*") if path.is_file()]
    assert 0 < len(files) <= 8
    assert all(len(path.relative_to(out).parts) <= 3 for path in files)  # at most two folders down
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for path in files for part in path.relative_to(out).parts)
    assert (out / "summary.md").read_text().startswith("# GPU check: dry run")
    with tarfile.open(out / "logs.tar.gz") as archive:
        logs = {Path(name).name for name in archive.getnames()}
    assert {f"{stage}.log" for stage in STAGES} <= logs


def test_a_short_budget_skips_the_late_stages_instead_of_overrunning(tmp_path):
    result = _dry_run(tmp_path / "out", "--budget", "200")
    assert result.returncode == 0
    stages = json.loads((tmp_path / "out" / "results.json").read_text())["stages"]
    assert sum(stage["limit_s"] for stage in stages) <= 200
    assert stages[-1]["status"] == "SKIP" and stages[-1]["note"] == "out of time"


def test_a_stage_past_its_limit_is_interrupted_first_so_that_pytest_writes_its_report(tmp_path):
    gpu_check = load_script("gpu_check")
    marker = tmp_path / "interrupted"
    # A stage that reports only when interrupted, as pytest does; started here with SIGINT ignored, as a background
    # job of a shell without job control would be, which the stage must undo.
    script = (f"import pathlib, time\ntry:\n    time.sleep(60)\n"
              f"except KeyboardInterrupt:\n    pathlib.Path({str(marker)!r}).write_text('report')\n")
    stage = gpu_check.Stage("slow", gpu_check.MIN_STAGE_S, lambda check: f"{sys.executable} -c {shlex.quote(script)}")
    check = gpu_check.Check(tmp_path / "out", gpu_check.RESERVE_S + gpu_check.MIN_STAGE_S + 1, "test", dry_run=False)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = gpu_check.run_stage(check, stage)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.status == "FAIL" and result.note.startswith("timed out")
    assert marker.read_text() == "report"


def test_the_profile_script_runs_on_a_cpu():
    """scripts/gpu_profile.py (the check's profile stage) on CPU tensors at small sizes: a row per provider, through
    functional and direct, the emulated cuda and interpreted triton backends included where the tests' environment
    turns them on."""
    # The limit only guards against a hang, with room for slower machines and more pytest workers (on the 2-core
    # Zen 3 it took 159 s beside a second worker at 40 calls a provider, 27 s alone at --quick's 5).
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_profile.py"), "--device", "cpu", "--quick"],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "F reference" in result.stdout and "direct reference" in result.stdout
    if cuda_compiled.EMULATED_GPU:
        assert "F cuda" in result.stdout and "direct cuda" in result.stdout
    if os.environ.get("TRITON_INTERPRET") == "1" and "triton" in s2s_fast.available_backends("cpu"):
        assert "F triton" in result.stdout and "direct triton" in result.stdout
    assert re.search(r"gpu-profile: \d+ provider rows on cpu", result.stdout)


def _tree(root: Path) -> Path:
    """A copy of the CUDA sources the stamp covers, with s2s_fast/ and the carried library's folder."""
    for source in [*ROOT.glob("csrc/*.cu"), *ROOT.glob("csrc/*.h"), ROOT / "csrc/ops.cpp", ROOT / "csrc/module.cpp"]:
        (root / "csrc").mkdir(parents=True, exist_ok=True)
        (root / "csrc" / source.name).write_bytes(source.read_bytes())
    (root / "setup.py").write_bytes((ROOT / "setup.py").read_bytes())
    (root / "s2s_fast").mkdir()
    (root / "build/cuda/tree/s2s_fast").mkdir(parents=True)
    return root


def test_the_extension_stage_uses_only_a_library_built_from_these_sources(tmp_path, monkeypatch):
    """A carried library was used whatever sources it was built from (an older CI's kernels, tested without a
    word); the stamp beside it now says which, and one from other sources is built again here."""
    gpu_check = load_script("gpu_check")
    root = _tree(tmp_path / "tree")
    carried = root / "build/cuda/tree/s2s_fast"
    (carried / "_C.abi3.so").write_text("carried")
    (carried / gpu_check.STAMP).write_text(gpu_check.sources_digest(root) + "\n")
    (root / "s2s_fast" / "_C.abi3.so").write_text("stale, no stamp")
    builds = []
    monkeypatch.setattr(gpu_check, "_loads", lambda where: True)
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *args, **kwargs: builds.append(args) or
                        subprocess.CompletedProcess(args, 0))
    assert gpu_check.prepare_extension(root) == 0 and builds == []
    assert (root / "s2s_fast" / "_C.abi3.so").read_text() == "carried"
    # The kernels change after the library was built: neither copy is used, it is built here and stamped.
    (root / "csrc" / "lstm_cell.cu").write_text((root / "csrc" / "lstm_cell.cu").read_text() + "\n// changed\n")
    assert gpu_check.prepare_extension(root) == 0 and len(builds) == 1
    assert not (root / "s2s_fast" / "_C.abi3.so").exists()  # removed before the build (which is faked here)
    assert (root / "s2s_fast" / gpu_check.STAMP).read_text().strip() == gpu_check.sources_digest(root)
    # That build (a library and its stamp in s2s_fast/) serves the next call; once setup.py's flags change, it is
    # built again.
    (root / "s2s_fast" / "_C.abi3.so").write_text("built here")
    assert gpu_check.prepare_extension(root) == 0 and len(builds) == 1
    assert (root / "s2s_fast" / "_C.abi3.so").read_text() == "built here"
    (root / "setup.py").write_text((root / "setup.py").read_text() + "\n# changed flags\n")
    assert gpu_check.prepare_extension(root) == 0 and len(builds) == 2
    assert not (root / "s2s_fast" / "_C.abi3.so").exists()
    assert (root / "s2s_fast" / gpu_check.STAMP).read_text().strip() == gpu_check.sources_digest(root)
    # s2s_fast/'s own library of these sources serves first; the carried one (which does not load here) stays out.
    digest = gpu_check.sources_digest(root)
    (root / "s2s_fast" / "_C.abi3.so").write_text("local")
    (carried / gpu_check.STAMP).write_text(digest + "\n")
    monkeypatch.setattr(gpu_check, "_loads", lambda where: (where / "s2s_fast/_C.abi3.so").read_text() == "local")
    assert gpu_check.prepare_extension(root) == 0 and len(builds) == 2
    assert (root / "s2s_fast" / "_C.abi3.so").read_text() == "local"


def test_the_deps_stage_fails_when_a_module_the_checks_import_is_missing(tmp_path, monkeypatch):
    gpu_check = load_script("gpu_check")
    monkeypatch.setattr(gpu_check, "NEEDED_MODULES", ("json", "no_such_module_s2s"))
    check = gpu_check.Check(tmp_path / "out", 100, "test", dry_run=True)
    result = subprocess.run(["bash", "-c", gpu_check._deps_command(check)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "missing: no_such_module_s2s (their wheels in .whl" in result.stdout
    # What the stage installs goes to the check's own folder, which is on the path it runs with from the start.
    (check.site / "s2s_probe_module.py").write_text("")
    monkeypatch.setattr(gpu_check, "NEEDED_MODULES", ("json", "s2s_probe_module"))
    result = subprocess.run(["bash", "-c", gpu_check._deps_command(check)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": check.python_path()})
    assert result.returncode == 0 and "every module the checks import is here" in result.stdout, result.stdout


def test_a_cut_short_bench_and_test_report_still_come_back(tmp_path):
    """The bench stopped before its tables: the cases it finished come back; a junit report cut short by a kill
    leaves the summary written, not a traceback that skipped every later stage."""
    gpu_check = load_script("gpu_check")
    check = gpu_check.Check(tmp_path / "out", 100, "test", dry_run=False)
    (check.work / "bench").mkdir()
    (check.work / "bench" / "results.partial.json").write_text("[]\n")
    (check.logs / "gpu_tests.xml").write_text("<testsuites><testsuite tests='3'")
    gpu_check.write_outputs(check, "no GPU")
    assert (tmp_path / "out" / "bench" / "results.partial.json").read_text() == "[]\n"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "gpu_tests.xml unreadable" in summary and "Cut short" in summary
