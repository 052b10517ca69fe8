#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
