#!/bin/bash
# Pair 2 of the protocol: started when both of pair 1 (pids given) end, with the steps that fit the 91 minutes.
cd /work/runs8
start=$(date -u -d 2026-12-07T04:54:33 +%s)
while kill -0 "$1" 2>/dev/null || kill -0 "$2" 2>/dev/null; do sleep 5; done
now=$(date -u +%s)
pair1=$((now - start))
left=$((5460 - pair1))
# pair 1's seconds per step over the whole pair (dev evaluations included), 3% margin, whole hundreds of steps
steps=$(python -c "print(int($left / ($pair1 / 9000) / 1.03 // 100 * 100))")
echo "pair seed 6 end $(date -u +%FT%T) (${pair1} s); pair 2: ${left} s left, ${steps} steps" >> drive.log
common="--task g2p --preset g2p --threads 1 --matmul-precision medium --keep-checkpoints 4 --max-steps $steps --progress off"
echo "pair seed 7 start $(date -u +%FT%T)" >> drive.log
taskset -c 0 python -m s2s_fast train $common --output-dir /work/runs8/g2p-l7 --seed 7 > l7.out 2>&1 &
a=$!
taskset -c 1 python -m s2s_fast train $common --output-dir /work/runs8/g2p-r7 --seed 7 \
    --model reverse_target=true > r7.out 2>&1 &
b=$!
wait $a; ra=$?; wait $b; rb=$?
echo "pair seed 7 end $(date -u +%FT%T) rc $ra $rb" >> drive.log
echo "end $(date -u +%FT%T)" >> drive.log
