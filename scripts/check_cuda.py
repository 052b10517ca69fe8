"""Compile-check of csrc/ without a GPU: what CI can say about the CUDA kernels.

1. nvcc compiles every kernel file (csrc/*.cu) for sm_80 and sm_90 with warnings as errors (ptxas' too) and
   ptxas' resource report (-Xptxas -v); the check fails if a kernel spills registers or keeps a stack frame
   (an array moved to local memory), and prints registers, shared memory, stack and spills per kernel.
2. The host compiler syntax-checks the torch binding (csrc/ops.cpp) against the installed torch headers, when
   torch and the Python headers are found (a CPU build of torch ships the CUDA headers the binding needs, all but one
   generated macro header, supplied here).

Where nvcc is absent the check says so and exits 0. Usage: python scripts/check_cuda.py [--jobs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
ARCHES = ("80", "90")
NVCC_FLAGS = ["-std=c++20", "-O3", "-lineinfo", "-Werror", "all-warnings", "-Xptxas", "-v,-warn-spills",
              *[f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in ARCHES]]

_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'")
_PROPERTIES = re.compile(r"Function properties for (?P<name>\S+)")
_FRAME = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
                    r"(?P<loads>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<registers>\d+) registers(?P<rest>.*)")
_SMEM = re.compile(r"(?P<bytes>\d+) bytes smem")


@dataclasses.dataclass
class KernelResources:
    """ptxas' report for one kernel entry on one architecture."""

    name: str
    arch: str
    registers: int = 0
    shared_bytes: int = 0
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0

    @property
    def problem(self) -> str | None:
        if self.spill_stores or self.spill_loads:
            return f"spills ({self.spill_stores} bytes stored, {self.spill_loads} bytes loaded)"
        if self.stack_bytes:
            return f"{self.stack_bytes}-byte stack frame (an array in local memory)"
        return None


def parse_ptxas_report(text: str) -> list[KernelResources]:
    """The kernel entries of ptxas' -v output, in order, with registers, static shared memory, stack and spills."""
    kernels: dict[tuple[str, str], KernelResources] = {}
    current: KernelResources | None = None
    properties_of: str | None = None
    for line in text.splitlines():
        if match := _ENTRY.search(line):
            current = kernels.setdefault((match["name"], match["arch"]),
                                         KernelResources(match["name"], match["arch"]))
        elif match := _PROPERTIES.search(line):
            properties_of = match["name"]
        elif (match := _FRAME.search(line)) and current is not None and properties_of == current.name:
            current.stack_bytes = int(match["stack"])
            current.spill_stores = int(match["stores"])
            current.spill_loads = int(match["loads"])
        elif (match := _USED.search(line)) and current is not None:
            current.registers = int(match["registers"])
            smem = _SMEM.search(match["rest"])
            current.shared_bytes = int(smem["bytes"]) if smem else 0
    return list(kernels.values())


def demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {name: name for name in names}
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=False)
    lines = result.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {name: name for name in names}


def short_name(demangled: str) -> str:
    """'void s2s_fast::(anonymous namespace)::kernel<float, 16, 4>(Params)' -> 'kernel<float, 16, 4>'."""
    name = demangled.split("(")[0] if "(anonymous namespace)" not in demangled else \
        demangled.split("(anonymous namespace)::", 1)[1].split("(")[0]
    name = name.replace("__nv_bfloat16", "bf16").replace("__half", "half")
    return name.rsplit("::", 1)[-1] if "<" not in name else name.split("::")[-1]


def compile_kernel_file(nvcc: str, source: Path, out_dir: Path) -> tuple[Path, int, str]:
    command = [nvcc, *NVCC_FLAGS, "-I", str(CSRC), "-c", str(source), "-o", str(out_dir / (source.stem + ".o"))]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return source, result.returncode, result.stdout + result.stderr


def nvcc_include_dirs(nvcc: str) -> list[str]:
    """The include directories nvcc itself uses (its --dryrun prints them)."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe.cu"
        probe.write_text("")
        result = subprocess.run([nvcc, "--dryrun", "-c", str(probe), "-o", str(Path(scratch) / "probe.o")],
                                capture_output=True, text=True, check=False)
    dirs = []
    for line in (result.stdout + result.stderr).splitlines():
        if "INCLUDES=" in line:
            dirs += [token.strip('"') for token in re.findall(r'"[^"]*"', line) if token.strip('"') != "-isystem"]
    return [d.removeprefix("-I") for d in dirs if d.removeprefix("-I")]


def check_binding(nvcc: str) -> tuple[str, str]:
    """('pass' | 'fail' | 'skip', message) of the syntax check of csrc/ops.cpp."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        return "skip", "no host C++ compiler (g++ or $CXX) found"
    try:
        import torch.utils.cpp_extension as cpp_extension
    except ImportError:
        return "skip", "torch is not importable"
    python_include = sysconfig.get_paths()["include"]
    if not (Path(python_include) / "Python.h").exists():
        return "skip", f"Python.h not found in {python_include}"
    torch_includes = cpp_extension.include_paths()
    with tempfile.TemporaryDirectory() as shim:
        # A CPU build of torch lacks this generated header; its one definition is all the binding needs of it.
        if not any((Path(d) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for d in torch_includes):
            header = Path(shim) / "c10/cuda/impl/cuda_cmake_macros.h"
            header.parent.mkdir(parents=True)
            header.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        command = [compiler, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I", str(CSRC),
                   "-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H"]
        for directory in [shim, *torch_includes, *nvcc_include_dirs(nvcc), python_include]:
            command += ["-isystem", directory]
        result = subprocess.run([*command, str(CSRC / "ops.cpp")], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return "fail", result.stdout + result.stderr
    return "pass", "csrc/ops.cpp compiles against the installed torch headers"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="kernel files compiled at once")
    parser.add_argument("--keep", type=Path, help="keep the object files in this directory")
    args = parser.parse_args()
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("check_cuda: nvcc not found on PATH; skipping the CUDA compile check")
        return 0
    sources = sorted(CSRC.glob("*.cu"))
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.keep or Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda source: compile_kernel_file(nvcc, source, out_dir), sources))
    rows = []
    for source, returncode, output in results:
        if returncode != 0:
            failures.append(f"{source.name}: nvcc failed\n{output}")
        kernels = parse_ptxas_report(output)
        names = demangle([kernel.name for kernel in kernels])
        for kernel in kernels:
            rows.append((source.name, short_name(names[kernel.name]), kernel))
            if kernel.problem is not None:
                failures.append(f"{source.name}: {names[kernel.name]} on {kernel.arch}: {kernel.problem}")
    print(f"{'file':24} {'kernel':64} {'arch':6} {'regs':>4} {'smem':>6} {'stack':>5} {'spill st/ld':>11}")
    for file_name, kernel_name, kernel in rows:
        print(f"{file_name:24} {kernel_name:64} {kernel.arch:6} {kernel.registers:>4} {kernel.shared_bytes:>6} "
              f"{kernel.stack_bytes:>5} {kernel.spill_stores:>5}/{kernel.spill_loads:<5}")
    binding_status, binding_message = check_binding(nvcc)
    print(f"binding: {binding_status}: {binding_message if binding_status != 'fail' else 'see below'}")
    if binding_status == "fail":
        failures.append(f"csrc/ops.cpp does not compile:\n{binding_message}")
    if failures:
        print("\ncheck_cuda: FAIL\n" + "\n".join(failures))
        return 1
    print(f"check_cuda: PASS ({len(sources)} kernel files, {len(rows)} kernel entries, sm_{', sm_'.join(ARCHES)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
