#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the test suite. Extra arguments go to pytest. The tests run on one
# pytest-xdist worker per CPU, at most 4, unless the arguments or PYTEST_ADDOPTS choose: -n N (-n 0: one process, as
# -s and --pdb want), or -p no:xdist. setup.sh installs pytest-xdist with the test extras (its installed check counts
# it). (On a 2-core AMD EPYC Zen 3 the suite took 15.2-15.9 min on two workers, 2026-12-07, against 23.8 min in one
# process in an earlier CI run there.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=${PYTHON:-python3}
workers=(-n auto --maxprocesses 4)
read -r -a added <<< "${PYTEST_ADDOPTS:-}"
for argument in "$@" ${added[@]+"${added[@]}"}; do
  case "$argument" in
    -n* | --numprocesses | --numprocesses=* | *no:xdist) workers=() ;;
  esac
done
exec "$PYTHON" -m pytest ${workers[@]+"${workers[@]}"} "$@"
