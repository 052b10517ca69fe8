#!/usr/bin/env bash
# Installs s2s_fast and everything it needs, on a fresh machine or again on a set-up one (idempotent).
# Without a GPU, torch is pinned to the CPU build 2.13.0 (an unpinned torch pulls gigabytes of CUDA packages);
# where torch is already installed (a GPU machine's CUDA build), it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install -q torch==2.13.0
fi
"$PYTHON" -m pip install -q --upgrade "setuptools>=64" wheel ninja pybind11
"$PYTHON" -m pip install -q --no-build-isolation -e ".[test]"
"$PYTHON" -c "import importlib.util as u; print('s2s_fast: CUDA extension', 'built' if u.find_spec('s2s_fast._C') else 'not built (no CUDA build of torch or no CUDA toolkit)', '| CUDA emulation', 'built' if u.find_spec('s2s_fast._C_emulated') else 'not built', '| cpu kernels', 'built' if u.find_spec('s2s_fast._cpu') else 'not built')"
