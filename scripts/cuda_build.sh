#!/usr/bin/env bash
# CI stage: build the CUDA extension s2s_fast._C against the GPU machines' torch (2.11.0, its default CUDA 13.0
# build) on Python 3.12, for sm_80 and sm_90 (+ PTX), and check it without a GPU (scripts/check_cuda_build.py).
#
# Everything lands under build/cuda/ (ignored): the venv, a copy of the sources, and the built library
# build/cuda/tree/s2s_fast/_C.abi3.so, which a GPU machine with the same torch can use instead of building
# (copy it into s2s_fast/ there; README, "The CUDA extension and the GPU check"). Skipped, saying why, where there is
# no Python 3.12 or no nvcc. Before it, scripts/check_symbolic_sizes.py traces the Triton ops with symbolic sizes
# (which sizes a torch.compile'd model recompiles for). The last line is check_cuda_build.py's "cuda-build: ..." line.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${S2S_FAST_CUDA_TORCH:-2.11.0}
WORK=build/cuda
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

find_python312() {
  # A pyenv shim on PATH can exist and still refuse to run ("python3.12: command not found" when 3.12 is not the
  # selected version), so each candidate must run and be 3.12; pyenv's own installs come first.
  local root cand
  root=$( (command -v pyenv >/dev/null && pyenv root) || echo "$HOME/.pyenv")
  for cand in $(ls -d "$root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV) $(command -v python3.12 || true); do
    if "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; then
      echo "$cand"
      return
    fi
  done
}

PYTHON312=$(find_python312 || true)
if [ -z "$PYTHON312" ]; then
  echo "cuda-build: skipped (no Python 3.12, the GPU machines' Python, on PATH or under pyenv)"
  exit 0
fi
if ! command -v nvcc >/dev/null; then
  echo "cuda-build: skipped (no nvcc on PATH)"
  exit 0
fi

start=$SECONDS
if [ ! -x "$WORK/venv/bin/python" ] || ! "$WORK/venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  rm -rf "$WORK/venv"
  "$PYTHON312" -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "torch==$TORCH_VERSION" numpy setuptools wheel ninja
fi
echo "cuda-build: venv ready ($("$WORK/venv/bin/python" -c 'import torch; print(torch.__version__)'), $((SECONDS - start)) s)"

# What it is built from, taken before the copy: the GPU check uses a carried library only with this stamp matching
# its sources.
DIGEST=$("$PYTHON312" scripts/gpu_check.py --sources-digest)
# A copy of the sources, so that the library built against this torch never lands in the working tree.
mkdir -p "$WORK/tree"
rm -rf "$WORK/tree/csrc" "$WORK/tree/s2s_fast/"*.py "$WORK/tree/scripts"
tar cf - setup.py pyproject.toml README.md csrc scripts/check_cuda_build.py scripts/check_symbolic_sizes.py \
  scripts/check_dynamo_trace.py \
  $(find s2s_fast -name '*.py') | tar xf - -C "$WORK/tree"
start=$SECONDS
(cd "$WORK/tree" && S2S_FAST_BUILD_CUDA=1 S2S_FAST_BUILD_EMULATION=0 S2S_FAST_BUILD_CPU=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  ../venv/bin/python setup.py -q build_ext --inplace > ../build.log 2>&1) || {
  tail -n 40 "$WORK/build.log"
  echo "cuda-build: FAIL (the build failed; the whole log is $WORK/build.log)"
  exit 1
}
echo "$DIGEST" > "$WORK/tree/s2s_fast/_C.sources.sha256"
echo "cuda-build: built $WORK/tree/s2s_fast/$(cd "$WORK/tree/s2s_fast" && ls _C*.so) in $((SECONDS - start)) s"
cd "$WORK/tree"
# Which sizes the Triton ops pin under torch.compile (fake CUDA tensors with symbolic sizes: this torch has CUDA).
PYTHONPATH=$PWD S2S_FAST_CUDA_EMULATE= ../venv/bin/python scripts/check_symbolic_sizes.py
# Whether Dynamo traces every public op whole under this torch (CPU tensors, reference backend).
PYTHONPATH=$PWD S2S_FAST_CUDA_EMULATE= ../venv/bin/python scripts/check_dynamo_trace.py
PYTHONPATH=$PWD S2S_FAST_CUDA_EMULATE= exec ../venv/bin/python scripts/check_cuda_build.py
