#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the main job, the benchmark suite (s2s-fast bench), on whatever
# device is here. Without a CUDA GPU it runs --quick (minutes on a CPU); extra arguments go to s2s-fast bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  set -- --quick "$@"
fi
exec "$PYTHON" -m s2s_fast bench "$@"
