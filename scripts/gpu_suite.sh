#!/usr/bin/env bash
# One-shot GPU suite: builds the CUDA extension, runs every GPU test, runs compute-sanitizer on each kernel, times the
# kernels (and the benchmark suite when s2s_fast.bench exists), and writes a summary to
# benchmarks/results/<date>_<gpu>_gpu_suite.md (copied to $OUT when set, with the logs and benchmark tables).
#
# Needs no network: the package is built in place and installed with --no-deps --no-index. Every stage logs to
# benchmarks/results/logs/; a failing stage does not stop later ones; the end prints a PASS/FAIL table.
# The whole run keeps inside S2S_GPU_SUITE_BUDGET_S seconds (default 570, under one 600 s device call): each stage's
# time limit shrinks to what is left, and the optional stages run only if time remains.
#
# One device call (600 s) cannot hold every stage: S2S_GPU_SUITE_STAGES=build,install,... runs only the named stages
# (default: all, as time allows). The build is skipped when s2s_fast/_C*.so is newer than every csrc/ file, and the
# built library is copied to $OUT, so a second call can carry it back instead of rebuilding.
#
# Usage: bash scripts/gpu_suite.sh        (env: PYTHON, MAX_JOBS, S2S_GPU_SUITE_BUDGET_S, S2S_GPU_SUITE_STAGES)
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
BUDGET=${S2S_GPU_SUITE_BUDGET_S:-570}
RESERVE=20
START=$(date +%s)
RESULTS=benchmarks/results
LOGS=$RESULTS/logs
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
GPU=${GPU:-no_gpu}
STAMP=$(date +%Y-%m-%d_%H%M)
NAME="${STAMP}_$(echo "$GPU" | tr -c 'A-Za-z0-9._\n-' '_' | tr -d '\n')"
SUMMARY=$RESULTS/${NAME}_gpu_suite.md

STAGES=()
STATUSES=()
SECONDS_USED=()
NOTES=()

ONLY=${S2S_GPU_SUITE_STAGES:-all}
wanted() { [[ $ONLY == all || ",$ONLY," == *",$1,"* ]]; }

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# run_stage NAME CAP_SECONDS COMMAND: runs COMMAND (a bash string) with a time limit, logs to $LOGS/NAME.log.
run_stage() {
    local name=$1 cap=$2 command=$3
    wanted "$name" || return 0
    local left=$(($(remaining) - RESERVE))
    local limit=$((cap < left ? cap : left))
    local log=$LOGS/$name.log
    if ((limit < 10)); then
        echo "== $name: SKIP (out of time)"
        STAGES+=("$name"); STATUSES+=("SKIP"); SECONDS_USED+=(0); NOTES+=("out of time budget")
        return
    fi
    echo "== $name (limit ${limit}s): $command"
    local begin=$(date +%s)
    timeout --signal=TERM --kill-after=10 "$limit" bash -c "$command" >"$log" 2>&1
    local code=$?
    local took=$(($(date +%s) - begin))
    local status=PASS note=""
    if ((code == 124 || code == 137)); then
        status=FAIL; note="timed out after ${limit}s"
    elif ((code != 0)); then
        status=FAIL; note="exit code $code"
    fi
    tail -n 5 "$log" | sed "s/^/   [$name] /"
    echo "== $name: $status ${note:+($note)} in ${took}s"
    STAGES+=("$name"); STATUSES+=("$status"); SECONDS_USED+=("$took"); NOTES+=("$note")
}

skip_stage() {
    echo "== $1: SKIP ($2)"
    STAGES+=("$1"); STATUSES+=("SKIP"); SECONDS_USED+=(0); NOTES+=("$2")
}

run_stage environment 30 "nvidia-smi; $PYTHON -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__); print(torch.cuda.get_device_properties(0))'; nvcc --version; git -C '$ROOT' log -1 --oneline || echo 'no git history in this copy'"

EXTENSION=$(ls s2s_fast/_C*.so 2>/dev/null | head -n 1)
if [[ -n $EXTENSION && -z $(find csrc setup.py -newer "$EXTENSION" -type f 2>/dev/null) ]]; then
    wanted build && skip_stage build "$EXTENSION is newer than csrc/ and setup.py"
else
    run_stage build 300 "S2S_FAST_BUILD_CUDA=1 $PYTHON setup.py build_ext --inplace"
fi

# The extension is already in the source tree; the editable install adds the s2s-fast command without rebuilding.
run_stage install 90 "S2S_FAST_BUILD_CUDA=0 $PYTHON -m pip install --no-deps --no-build-isolation --no-index -e ."

run_stage extension 60 "$PYTHON -c 'import torch, s2s_fast.cuda as c; r = c.unavailable_reason(torch.device(\"cuda\")); assert r is None, r; print(\"s2s_fast._C loaded; cuda backend available\")'"

# The cuda backend's tests first; the other GPU tests (triton backend, modules, models) after the sanitizers.
# A per-test time limit where pytest-timeout is installed; pytest's "no tests collected" (5) is not a failure.
PYTEST="$PYTHON -m pytest -m gpu -q -p no:cacheprovider -rfE"
$PYTHON -c "import pytest_timeout" >/dev/null 2>&1 && PYTEST="$PYTEST --timeout 120"
pytest_stage() { echo "$PYTEST $*; code=\$?; [ \$code -eq 5 ] && exit 0; exit \$code"; }
run_stage gpu_tests_cuda 200 "$(pytest_stage --junitxml=$LOGS/gpu_tests_cuda.xml tests/test_cuda.py)"

# Only the s2s_fast kernels are checked (the filter keeps torch's own kernels out); without the caching allocator
# every tensor is its own allocation, so an access past its end is caught.
SANITIZE="compute-sanitizer --error-exitcode 1 --print-limit 30 --kernel-name kns=s2s_fast"
run_stage memcheck 100 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 $SANITIZE --tool memcheck $PYTHON scripts/cuda_sanitizer_driver.py"
run_stage racecheck 100 "$SANITIZE --tool racecheck --racecheck-report all $PYTHON scripts/cuda_sanitizer_driver.py"

run_stage gpu_tests_other 200 "$(pytest_stage --junitxml=$LOGS/gpu_tests_other.xml --ignore=tests/test_cuda.py tests)"

run_stage kernel_bench 120 "$PYTHON scripts/bench_cuda_kernels.py --out $RESULTS"

# Target cases run first; --time-limit leaves the rest "unavailable" rather than overrunning the stage.
run_stage bench_suite 420 "$PYTHON -m s2s_fast bench --device cuda --output-dir $RESULTS/bench --time-limit 330"

run_stage synccheck 90 "$SANITIZE --tool synccheck $PYTHON scripts/cuda_sanitizer_driver.py"
run_stage initcheck 90 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 $SANITIZE --tool initcheck $PYTHON scripts/cuda_sanitizer_driver.py"
run_stage ptxas_report 120 "$PYTHON scripts/check_cuda.py"

{
    echo "# GPU suite, $GPU, $STAMP"
    echo
    echo "Commit: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown). Driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)."
    echo "$($PYTHON -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null); $(nvcc --version 2>/dev/null | tail -n 1)"
    echo
    echo "| stage | status | seconds | note |"
    echo "| --- | --- | ---: | --- |"
    for i in "${!STAGES[@]}"; do
        echo "| ${STAGES[$i]} | ${STATUSES[$i]} | ${SECONDS_USED[$i]} | ${NOTES[$i]} |"
    done
    echo
    for xml in "$LOGS"/gpu_tests_*.xml; do
        [[ -f $xml ]] || continue
        echo "## $(basename "$xml" .xml)"
        $PYTHON - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
totals = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
print(f"{totals['tests']} tests: {totals['failures']} failed, {totals['errors']} errors, {totals['skipped']} skipped")
for case in root.iter("testcase"):
    for outcome in ("failure", "error"):
        element = case.find(outcome)
        if element is not None:
            message = (element.get("message") or "").splitlines()[0][:200] if element.get("message") else ""
            print(f"- {outcome}: {case.get('classname')}.{case.get('name')}: {message}")
EOF
        echo
    done
    echo "## compute-sanitizer"
    for tool in memcheck racecheck synccheck initcheck; do
        [[ -f $LOGS/$tool.log ]] && echo "- $tool: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' "$LOGS/$tool.log" | tail -n 1)"
    done
    echo
    latest_bench=$(ls -t "$RESULTS"/*_cuda_kernels.md 2>/dev/null | head -n 1)
    if [[ -n $latest_bench ]]; then
        echo "## Kernel benchmark ($(basename "$latest_bench"))"
        echo
        tail -n +3 "$latest_bench"
    fi
} >"$SUMMARY"

tar -czf "$RESULTS/${NAME}_gpu_suite_logs.tar.gz" -C "$RESULTS" logs $([[ -d $RESULTS/bench ]] && echo bench)
if [[ -n ${OUT:-} ]]; then
    cp "$SUMMARY" "$RESULTS/${NAME}_gpu_suite_logs.tar.gz" "$OUT"/
    [[ -f $RESULTS/bench/results.md ]] && cp "$RESULTS/bench/results.md" "$OUT/${NAME}_bench_results.md"
    EXTENSION=$(ls s2s_fast/_C*.so 2>/dev/null | head -n 1)
    [[ -n $EXTENSION ]] && cp "$EXTENSION" "$OUT"/
    for file in $(ls -t "$RESULTS"/*_cuda_kernels.md "$RESULTS"/*_cuda_kernels.json 2>/dev/null | head -n 2); do
        cp "$file" "$OUT"/
    done
fi

echo
echo "GPU suite on $GPU ($(($(date +%s) - START))s); summary: $SUMMARY"
printf '%-14s %-5s %7s  %s\n' stage status seconds note
for i in "${!STAGES[@]}"; do
    printf '%-14s %-5s %7s  %s\n' "${STAGES[$i]}" "${STATUSES[$i]}" "${SECONDS_USED[$i]}" "${NOTES[$i]}"
done
for status in "${STATUSES[@]}"; do
    [[ $status == FAIL ]] && exit 1
done
exit 0
