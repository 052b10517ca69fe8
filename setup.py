"""Builds the compiled parts of s2s_fast with torch.utils.cpp_extension; without torch or a compiler, pure Python.

- s2s_fast._C: the CUDA kernels (csrc/*.cu) and their torch binding (csrc/ops.cpp), when torch is a CUDA build and
  the CUDA toolkit is found. Machine code for sm_80 and sm_90 and PTX for compute_90, which newer GPUs compile when
  they load it (S2S_FAST_CUDA_ARCHS=90 builds one architecture, for a quick build on the GPU machine itself).
  S2S_FAST_BUILD_CUDA=0 skips it, =1 makes its absence an error; unset, it is built when possible.
- s2s_fast._C_emulated: the same kernel and binding sources built by the host C++ compiler against the CUDA
  emulation (csrc/emulation/), so that S2S_FAST_CUDA_EMULATE=h100 runs the cuda backend on CPU tensors. Built
  wherever torch and a C++ compiler are; S2S_FAST_BUILD_EMULATION=0 skips it.
- s2s_fast._cpu: the cpu backend's kernels (csrc/cpu/), built by the host C++ compiler wherever torch and a C++
  compiler are; S2S_FAST_BUILD_CPU=0 skips it. Its kernels are compiled once per instruction set (kernels_default.cpp
  everywhere, kernels_avx2.cpp and kernels_avx512.cpp on x86-64, each with its own -m flags) and the library picks
  the best one the CPU runs at import (csrc/cpu/capability.h).

Both libraries use only Python's stable ABI (no pybind11; the operators register through TORCH_LIBRARY), so one built
file serves every Python version from 3.10 on; it stays tied to the torch version it was built against.

The CUDA toolkit: CUDA_HOME (or CUDA_PATH) when set; otherwise the toolkit of the nvcc on PATH, asked with
`nvcc --dryrun` (the nvcc on PATH may be a wrapper script outside the toolkit, where torch's own guess, the parent of
nvcc's folder, holds no headers). TORCH_CUDA_ARCH_LIST is ignored (S2S_FAST_CUDA_ARCHS chooses). MAX_JOBS limits
parallel compile jobs (torch.utils.cpp_extension's knob). The host compiler builds without debug information (-g0);
S2S_FAST_BUILD_DEBUG_INFO=1 keeps it. No --use_fast_math: float32 kernels keep the accurate tanhf, and the fast
intrinsics are spelled out where they are meant (csrc/common.h).
"""

import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup


ENABLED = ("1", "true", "yes", "on")
DISABLED = ("0", "false", "no", "off")


def gencode_flags(archs):
    """nvcc flags for machine code of each architecture ("80,90") and PTX of the newest."""
    numbers = sorted({arch.strip() for arch in archs.split(",") if arch.strip()}, key=int)
    return [f"-gencode=arch=compute_{n},code=sm_{n}" for n in numbers] + [
        f"-gencode=arch=compute_{numbers[-1]},code=compute_{numbers[-1]}"]


# What the build said, also kept in a file: pip shows a build's output only when it fails or with -v, and
# scripts/setup.sh prints this file after installing.
MESSAGES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build", "s2s_fast-setup.txt")
_said = []


def _say(message):
    # pip runs this file once for metadata and once for the build: speak only in the build.
    if not {"egg_info", "dist_info"} & set(sys.argv[1:]):
        print(message, file=sys.stderr)
        _said.append(message)
        try:
            os.makedirs(os.path.dirname(MESSAGES), exist_ok=True)
            with open(MESSAGES, "w") as record:
                record.write("".join(line + "\n" for line in _said))
        except OSError:
            pass  # a read-only source tree: the messages still went to stderr


def _mode(variable):
    return os.environ.get(variable, "auto").strip().lower()


def _debug_info_flags():
    """The host compiler's debug-information flag, among each extension's own flags (which torch's builder puts
    after Python's on each command line): -g0, unless S2S_FAST_BUILD_DEBUG_INFO=1 keeps the -g of Python's flags.
    Debug information doubled the compile time (csrc/cpu/linear.cpp at -O3: 52 s with it, 25 s without, 2026-12-07,
    2-core AMD EPYC Zen 3) and made s2s_fast._cpu 24 MB; the kernels' line numbers for compute-sanitizer come from
    nvcc's -lineinfo either way."""
    return [] if _mode("S2S_FAST_BUILD_DEBUG_INFO") in ENABLED else ["-g0"]


def nvcc_toolkit(nvcc):
    """The CUDA toolkit folder of an nvcc executable (a wrapper script included), from what `nvcc --dryrun` prints."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = os.path.join(scratch, "probe.cu")
        open(probe, "w").close()
        result = subprocess.run([nvcc, "--dryrun", "-c", probe, "-o", os.path.join(scratch, "probe.o")],
                                capture_output=True, text=True, check=False)
    match = re.search(r"^#\$ _HERE_=(.+)$", result.stdout + result.stderr, re.MULTILINE)
    return os.path.dirname(os.path.realpath(match.group(1).strip())) if match else None


def find_cuda_home():
    """(toolkit folder or None, how it was found): CUDA_HOME/CUDA_PATH first, else the toolkit of nvcc on PATH."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable], variable
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None, "no nvcc on PATH and CUDA_HOME unset"
    return nvcc_toolkit(nvcc), f"the toolkit of {nvcc}"


def _why_no_cuda_extension():
    if not glob.glob("csrc/*.cu"):
        return "csrc/ has no kernels"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    home, source = find_cuda_home()
    if home is None:
        return f"the CUDA toolkit was not found ({source}); set CUDA_HOME to it"
    if not glob.glob(os.path.join(home, "include", "cuda_runtime.h")) and not glob.glob(
            os.path.join(home, "targets", "*", "include", "cuda_runtime.h")):
        return f"no CUDA headers (cuda_runtime.h) under {home} ({source}); set CUDA_HOME to the CUDA toolkit"
    # torch.utils.cpp_extension reads CUDA_HOME once, when it is first imported.
    os.environ["CUDA_HOME"] = home
    return None


def _cxx():
    """The host C++ compiler the extensions build with: $CXX, else c++."""
    return os.environ.get("CXX", "c++")


_HOST_BUILD = {}


def _why_no_host_extensions():
    """Why the extensions the host C++ compiler builds (the CUDA emulation, the cpu kernels) cannot be built here, or
    None: torch missing, no compiler, or one that does not compile a C++17 program (a broken $CXX failed the whole
    install with a traceback before, where no compiler at all gave the pure-Python install). Asked once."""
    if "reason" not in _HOST_BUILD:
        _HOST_BUILD["reason"] = _host_build_problem()
    return _HOST_BUILD["reason"]


def _host_build_problem():
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed"
    compiler = _cxx()
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}; set CXX)"
    with tempfile.TemporaryDirectory() as scratch:
        probe = os.path.join(scratch, "probe.cpp")
        with open(probe, "w") as source:
            source.write("#include <vector>\nint main() { return std::vector<int>{0}.front(); }\n")
        try:
            result = subprocess.run([compiler, "-std=c++17", probe, "-o", os.path.join(scratch, "probe")],
                                    capture_output=True, text=True, check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the C++ compiler {compiler} does not run ({error}; set CXX)"
    if result.returncode != 0:
        said = " ".join((result.stderr or result.stdout).split())[:200] or f"exit status {result.returncode}"
        return f"the C++ compiler {compiler} does not compile a C++17 program ({said}; set CXX)"
    return None


def _cuda_extension():
    mode = _mode("S2S_FAST_BUILD_CUDA")
    if mode in DISABLED:
        _say("s2s_fast: S2S_FAST_BUILD_CUDA=0, building without the CUDA extension")
        return None
    reason = _why_no_cuda_extension()
    if reason is not None:
        if mode in ENABLED:
            raise SystemExit(f"s2s_fast: S2S_FAST_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        _say(f"s2s_fast: building without the CUDA extension ({reason}); the cuda backend is unavailable, the "
             "others are installed")
        return None
    from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension

    gencode = gencode_flags(os.environ.get("S2S_FAST_CUDA_ARCHS", "80,90"))
    _say(f"s2s_fast: building the CUDA extension s2s_fast._C ({' '.join(gencode)}; toolkit {CUDA_HOME})")
    return CUDAExtension(
        "s2s_fast._C",
        sorted(glob.glob("csrc/*.cu") + ["csrc/ops.cpp", "csrc/module.cpp"]),
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args={
            "cxx": ["-O3", *_debug_info_flags()],
            # --threads compiles the architectures of a file in parallel (the attention file is the long pole).
            "nvcc": ["-O3", "-lineinfo", f"--threads={len(gencode)}", *gencode],
        },
        py_limited_api=True,
    )


def _emulated_extension():
    if _mode("S2S_FAST_BUILD_EMULATION") in DISABLED:
        _say("s2s_fast: S2S_FAST_BUILD_EMULATION=0, building without the CUDA emulation")
        return None
    if _why_no_host_extensions() is not None:
        return None  # _build_kwargs says why, once for both
    from torch.utils.cpp_extension import CppExtension

    _say("s2s_fast: building the CUDA emulation s2s_fast._C_emulated (the kernels of csrc/ for the CPU)")
    return CppExtension(
        "s2s_fast._C_emulated",
        # selftest.cpp is a program of its own (tests/test_cuda_emulation.py builds it with sanitizers).
        sorted(source for source in glob.glob("csrc/emulation/*.cpp") if not source.endswith("selftest.cpp")),
        # The emulation's cuda_runtime.h & co. must shadow any real ones.
        include_dirs=[os.path.abspath("csrc/emulation/include"), os.path.abspath("csrc")],
        extra_compile_args=["-O2", "-fno-strict-aliasing", "-Wno-unknown-pragmas", *_debug_info_flags()],
        py_limited_api=True,
    )


# Per-instruction-set kernel files of s2s_fast._cpu and their flags; CPU_CAPABILITY names the namespace of the
# kernels inside (as in ATen's own CPU kernels), CPU_CAPABILITY_<SET> selects at::vec's implementation.
CPU_KERNEL_SETS = {"default": ["-DCPU_CAPABILITY=DEFAULT"]}
X86_CPU_KERNEL_SETS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
}


def _openmp_flags():
    """["-fopenmp"] where the installed torch runs ATen's parallel_for on OpenMP (its Linux builds do) and the C++
    compiler compiles and links an OpenMP program; else [] and why not."""
    import torch

    if not sys.platform.startswith("linux"):
        return [], f"OpenMP is used on Linux only, this is {sys.platform}"
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return [], "this torch does not run its parallel_for on OpenMP"
    with tempfile.TemporaryDirectory() as scratch:
        probe = os.path.join(scratch, "probe.cpp")
        with open(probe, "w") as source:
            source.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        result = subprocess.run([_cxx(), "-fopenmp", probe, "-o", os.path.join(scratch, "probe")],
                                capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return [], "the C++ compiler does not build with -fopenmp"
    return ["-fopenmp"], None


def _cpu_extension():
    if _mode("S2S_FAST_BUILD_CPU") in DISABLED:
        _say("s2s_fast: S2S_FAST_BUILD_CPU=0, building without the cpu backend's kernels")
        return None
    if _why_no_host_extensions() is not None:
        return None  # _build_kwargs says why, once for both
    from torch.utils.cpp_extension import CppExtension

    sets = dict(CPU_KERNEL_SETS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        sets.update(X86_CPU_KERNEL_SETS)
    # ATen's parallel_for is inline: compiled without OpenMP it runs every kernel on one thread. torch's Linux builds
    # use OpenMP (libgomp, which the loader shares with torch's own copy).
    openmp, why_not = _openmp_flags()
    threads = "on torch's OpenMP threads" if openmp else f"on one thread: {why_not}"
    _say(f"s2s_fast: building the cpu backend's kernels s2s_fast._cpu (instruction sets: {', '.join(sets)}; {threads})")
    extension = CppExtension(
        "s2s_fast._cpu",
        # The bindings; the kernels_<set>.cpp files are compiled by Build below.
        sorted(source for source in glob.glob("csrc/cpu/*.cpp") if not os.path.basename(source).startswith("kernels_"))
        + ["csrc/module.cpp"],
        include_dirs=[os.path.abspath("csrc/cpu")],
        extra_compile_args=["-O3", *_debug_info_flags()] + openmp +
        [f"-DS2S_FAST_CPU_{name.upper()}" for name in sets if name != "default"],
        extra_link_args=openmp,
        py_limited_api=True,
    )
    extension.kernel_sets = [(f"csrc/cpu/kernels_{name}.cpp", flags) for name, flags in sets.items()]
    return extension


def _build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    base = BuildExtension.with_options(use_ninja=True)

    class Build(base):
        """BuildExtension, plus the per-instruction-set kernel files of s2s_fast._cpu compiled with their own flags
        (setuptools gives every source of an extension the same flags) and linked into it."""

        def build_extension(self, ext):
            for source, flags in getattr(ext, "kernel_sets", ()):
                ext.extra_objects += self.compiler.compile(
                    [source], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                    extra_postargs=list(ext.extra_compile_args) + flags)
            super().build_extension(ext)

    return Build


def _build_kwargs():
    extensions = [ext for ext in (_emulated_extension(), _cpu_extension(), _cuda_extension()) if ext is not None]
    reason = _why_no_host_extensions() if "reason" in _HOST_BUILD else None
    if reason is not None:
        _say(f"s2s_fast: installing without the cpu backend's kernels and the CUDA emulation ({reason}): pure Python "
             "on the CPU, where the reference and aten backends serve CPU tensors")
    if not extensions:
        return {}
    return {"ext_modules": extensions, "cmdclass": {"build_ext": _build_ext_class()},
            "options": {"bdist_wheel": {"py_limited_api": "cp310"}}}


setup(**_build_kwargs())
