#!/usr/bin/env bash
# The GPU check in one device call (scripts/gpu_check.py says what it runs and writes): bash scripts/gpu_check.sh
# [--out DIR] [--budget SECONDS] [--commit HASH] [--dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
