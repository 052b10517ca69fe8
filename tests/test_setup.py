"""setup.py's choice of what to compile, without compiling: a C++ compiler that is missing or broken gives the
pure-Python install and one line saying why (a broken one failed the whole install with a traceback), also kept in
build/s2s_fast-setup.txt for scripts/setup.sh."""

import json
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


_COMPILE_ARGS = """
import json, runpy, setuptools
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path("setup.py", run_name="__main__")
print(json.dumps({ext.name: ext.extra_compile_args for ext in captured.get("ext_modules", [])}))
"""


@pytest.mark.parametrize("debug_info", [None, "1"])
def test_the_host_compiler_builds_without_debug_information_unless_asked(tmp_path, debug_info):
    """Python's build flags carry -g, which doubled the compile time: every host-compiled extension's own flags
    (which torch's builder puts after Python's on each command line) carry -g0, unless S2S_FAST_BUILD_DEBUG_INFO=1."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    unset = ("S2S_FAST_BUILD_DEBUG_INFO", "S2S_FAST_BUILD_CPU", "S2S_FAST_BUILD_EMULATION")
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    if debug_info is not None:
        environment["S2S_FAST_BUILD_DEBUG_INFO"] = debug_info
    result = subprocess.run([sys.executable, "-c", _COMPILE_ARGS, "build_ext"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    extensions = json.loads(result.stdout.splitlines()[-1])
    if not extensions:
        pytest.skip(f"setup.py compiles nothing here: {result.stderr.strip()}")
    assert {"s2s_fast._cpu", "s2s_fast._C_emulated"} <= set(extensions), result.stderr
    for name, flags in extensions.items():
        host_flags = flags["cxx"] if isinstance(flags, dict) else flags
        if debug_info is None:
            assert host_flags.count("-g0") == 1 and "-g" not in host_flags, (name, host_flags)
        else:
            assert "-g0" not in host_flags, (name, host_flags)
