#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the test suite. Extra arguments go to pytest. The tests run on one
# pytest-xdist worker per core, at most 4, unless the arguments choose: -n N, or -p no:xdist for one process. (On a
# 2-core AMD EPYC Zen 3 the suite took 15.9 min on two workers, 2026-12-07, against 23.8 min in one process in an
# earlier CI run there.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
workers=(-n auto --maxprocesses 4)
for argument in "$@"; do
  case "$argument" in
    -n | -n* | --numprocesses | --numprocesses=* | no:xdist) workers=() ;;
  esac
done
exec "${PYTHON:-python3}" -m pytest ${workers[@]+"${workers[@]}"} "$@"
