#!/bin/bash
# Two pairs one after the other; each process alone on a core.
cd /work/runs8
common="--task g2p --preset g2p --threads 1 --matmul-precision medium --keep-checkpoints 4 --max-steps 9000 --progress off"
echo "start $(date -u +%FT%T)" > drive.log
for seed in 6 7; do
  echo "pair seed $seed start $(date -u +%FT%T)" >> drive.log
  taskset -c 0 python -m s2s_fast train $common --output-dir /work/runs8/g2p-l$seed --seed $seed > l$seed.out 2>&1 &
  a=$!
  taskset -c 1 python -m s2s_fast train $common --output-dir /work/runs8/g2p-r$seed --seed $seed \
      --model reverse_target=true > r$seed.out 2>&1 &
  b=$!
  wait $a; ra=$?; wait $b; rb=$?
  echo "pair seed $seed end $(date -u +%FT%T) rc $ra $rb" >> drive.log
done
echo "end $(date -u +%FT%T)" >> drive.log
