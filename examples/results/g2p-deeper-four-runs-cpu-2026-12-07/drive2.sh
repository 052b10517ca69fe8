#!/bin/bash
# The amendment's second pair: wait for the first pair, then two right-to-left runs with the steps the time left buys.
cd /work/runs9
start=$(date -d "2026-12-07 08:07:19 UTC" +%s)
while pgrep -f "output-dir /work/runs9/g2p-(enc3|dec2)" > /dev/null; do sleep 5; done
now=$(date +%s); left=$((start + 5460 - now))
steps=$(python -c "print(int(($left - 60) / 0.307 / 1.03 / 100) * 100)")
echo "$(date -u +%T) first pair ended; $left s left; second pair: $steps steps each"
for c in "0 8" "1 9"; do set -- $c
  taskset -c $1 python -m s2s_fast train --task g2p --preset g2p --threads 1 --matmul-precision medium --progress off \
    --keep-checkpoints 4 --seed $2 --model reverse_target=true --output-dir /work/runs9/g2p-r$2 --max-steps $steps \
    > /work/runs9/r$2.out 2>&1 &
done
wait
echo "$(date -u +%T) second pair ended; budget end $(date -u -d @$((start + 5460)) +%T)"
