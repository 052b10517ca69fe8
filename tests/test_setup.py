"""setup.py's choice of what to compile, without compiling: a C++ compiler that is missing or broken gives the
pure-Python install and one line saying why (a broken one failed the whole install with a traceback), also kept in
build/s2s_fast-setup.txt for scripts/setup.sh."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("compiler, reason", [
    ("/bin/false", "the C++ compiler /bin/false does not compile a C++17 program (exit status 1; set CXX)"),
    ("no-such-c++", "no C++ compiler (no-such-c++; set CXX)"),
])
def test_an_install_without_a_working_compiler_is_pure_python_and_says_why_once(tmp_path, compiler, reason):
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    environment = {**os.environ, "CXX": compiler, "S2S_FAST_BUILD_CUDA": "0"}
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("s2s_fast: ")]
    expected = (f"s2s_fast: installing without the cpu backend's kernels and the CUDA emulation ({reason}): pure "
                "Python on the CPU, where the reference and aten backends serve CPU tensors")
    assert said == ["s2s_fast: S2S_FAST_BUILD_CUDA=0, building without the CUDA extension", expected], said
    assert (tmp_path / "build" / "s2s_fast-setup.txt").read_text().splitlines() == said
