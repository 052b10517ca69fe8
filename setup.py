"""Builds the CUDA extension s2s_fast._C from csrc/ when torch has CUDA and nvcc is found; else pure Python.

Environment knobs: S2S_FAST_BUILD_CUDA=0 skips the extension, =1 requires it (the build fails, saying why, when it
cannot be built); unset, it is built when possible. TORCH_CUDA_ARCH_LIST is ignored: the gencode flags below are used.
MAX_JOBS limits parallel compile jobs (torch.utils.cpp_extension's knob).

The kernels (csrc/*.cu) are plain CUDA C++; only csrc/ops.cpp includes torch. No --use_fast_math: float32 kernels keep
the accurate tanhf, and the fast intrinsics are spelled out where they are meant (csrc/common.h).
"""

import glob
import os
import sys

from setuptools import setup

GENCODE = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]


def _why_no_extension():
    if not glob.glob("csrc/*.cu"):
        return "csrc/ has no kernels"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if CUDA_HOME is None:
        return "nvcc was not found (set CUDA_HOME)"
    return None


def _say(message):
    # pip runs this file once for metadata and once for the build: speak only in the build.
    if not {"egg_info", "dist_info"} & set(sys.argv[1:]):
        print(message, file=sys.stderr)


def _extension_kwargs():
    mode = os.environ.get("S2S_FAST_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "false", "no", "off"):
        _say("s2s_fast: S2S_FAST_BUILD_CUDA=0, building without the CUDA extension")
        return {}
    reason = _why_no_extension()
    if reason is not None:
        if mode in ("1", "true", "yes", "on"):
            raise SystemExit(f"s2s_fast: S2S_FAST_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        _say(f"s2s_fast: building without the CUDA extension ({reason}); "
             "the reference and triton backends are installed")
        return {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    _say("s2s_fast: building the CUDA extension s2s_fast._C (sm_80, sm_90)")
    sources = sorted(glob.glob("csrc/*.cu") + glob.glob("csrc/*.cpp"))
    extension = CUDAExtension(
        "s2s_fast._C",
        sources,
        include_dirs=[os.path.abspath("csrc")],
        extra_compile_args={
            "cxx": ["-O3"],
            # --threads compiles the two architectures of a file in parallel (the attention file is the long pole).
            "nvcc": ["-O3", "-lineinfo", "--threads=2", *GENCODE],
        },
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**_extension_kwargs())
