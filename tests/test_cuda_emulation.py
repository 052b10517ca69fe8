"""The CUDA emulation itself (csrc/emulation/): its promises, and the kernels under AddressSanitizer and UBSan.

csrc/emulation/selftest.cpp is built here with the host compiler and -fsanitize=address,undefined: its "semantics"
mode checks that barriers block and a missing one shows, that deadlocks and misuse are reported instead of hanging,
that launch limits and device queries are an H100's; its "kernels" mode runs every kernel of csrc/ on small, awkward
sizes, where an out-of-bounds global or shared access stops the program (what compute-sanitizer finds on a GPU);
its "overflow" mode shows the sanitizer does stop one. The kernels' numerics are tested in test_cuda.py.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import s2s_fast
from s2s_fast.cuda import compiled

ROOT = Path(__file__).resolve().parent.parent
EMULATION = ROOT / "csrc" / "emulation"
SOURCES = ["runtime", "additive_attention", "gru_cell", "lstm_cell", "lstm_layer", "selftest"]
FLAGS = ["-std=c++17", "-O1", "-g1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
         "-I", str(EMULATION / "include"), "-I", str(ROOT / "csrc")]


@pytest.fixture(scope="module")
def selftest(tmp_path_factory):
    """The selftest program built with AddressSanitizer and UBSan (its sources compiled two at a time)."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX)")
    out = tmp_path_factory.mktemp("selftest")
    jobs = [subprocess.Popen([compiler, *FLAGS, "-c", str(EMULATION / f"{name}.cpp"), "-o", str(out / f"{name}.o")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in SOURCES]
    for name, job in zip(SOURCES, jobs):
        output, _ = job.communicate()
        assert job.returncode == 0, f"{name}.cpp does not compile with sanitizers:\n{output}"
    program = out / "selftest"
    link = subprocess.run([compiler, "-fsanitize=address,undefined", *[str(out / f"{n}.o") for n in SOURCES], "-o",
                           str(program)], capture_output=True, text=True)
    if link.returncode != 0 and "asan" in link.stderr.lower():
        pytest.skip(f"the sanitizer runtimes are not installed: {link.stderr.strip()}")
    assert link.returncode == 0, link.stderr
    return program


def _run(program, mode):
    environment = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    return subprocess.run([str(program), mode], capture_output=True, text=True, timeout=600, env=environment)


def test_emulation_keeps_cuda_semantics(selftest):
    result = _run(selftest, "semantics")
    assert result.returncode == 0 and "selftest semantics: passed" in result.stdout, result.stdout + result.stderr


def test_every_kernel_runs_clean_under_address_and_undefined_behaviour_sanitizers(selftest):
    result = _run(selftest, "kernels")
    assert result.returncode == 0 and "selftest kernels: passed" in result.stdout, result.stdout + result.stderr[-4000:]


def test_the_sanitizer_stops_an_out_of_bounds_read(selftest):
    result = _run(selftest, "overflow")
    assert result.returncode != 0 and "heap-buffer-overflow" in result.stderr


@pytest.mark.skipif(compiled.EMULATED_GPU is None, reason="the CUDA emulation is off")
def test_emulated_backend_takes_cpu_tensors_and_auto_leaves_it_alone():
    assert "cuda" in s2s_fast.available_backends("cpu")
    from s2s_fast import backends

    args = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.randn(16, 3), torch.randn(16, 4), None, None)
    assert backends.resolve("lstm_cell", torch.device("cpu"), args, backend="auto")[0] != "cuda"
    assert backends.resolve("lstm_cell", torch.device("cpu"), args, backend="cuda")[0] == "cuda"


@pytest.mark.skipif(compiled.EMULATED_GPU is None, reason="the CUDA emulation is off")
@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_emulated_device_answers_as_the_named_gpu(monkeypatch, gpu):
    monkeypatch.setenv(compiled.EMULATE_VARIABLE, gpu)
    assert compiled.device_limits(torch.device("cpu")) == (132, 232448)
    monkeypatch.setenv(compiled.EMULATE_VARIABLE, "a100")
    with pytest.raises(RuntimeError, match="names no emulated GPU"):
        compiled.device_limits(torch.device("cpu"))
