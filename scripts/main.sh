#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the main job on whatever device is here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m s2s_fast demo "$@"
