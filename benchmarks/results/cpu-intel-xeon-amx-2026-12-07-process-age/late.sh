#!/bin/bash
# Is the slower late step the process (caches, heap) or the model's state (denormals)? Side by side, one per core.
# usage: late.sh ROUND A_KIND B_KIND   (kinds: fresh, late, late-ftz, fresh-ftz); A on core 0, B on core 1
set -e
cd /tmp/s19
round=$1; shift
run() {  # kind core
  local kind=$1 core=$2 dir=/tmp/s19/r$round-$1-c$2
  rm -rf $dir
  local ftz="False"; [[ $kind == *ftz ]] && ftz="True"
  local args="--task g2p --preset g2p --threads 1 --matmul-precision medium --progress off --eval-every 100000 --save-every 100000"
  if [[ $kind == late* ]]; then
    cp -r /work/runs8/g2p-l6 $dir
    args="$args --resume --output-dir $dir --max-steps 9500"
  else
    args="$args --output-dir $dir --max-steps 500 --seed 6"
  fi
  taskset -c $core python -c "
import sys, torch
torch.set_flush_denormal($ftz)
from s2s_fast.cli import main
sys.exit(main(['train'] + sys.argv[1:]))" $args > $dir.out 2>&1
}
run $1 0 & run $2 1 & wait
for f in r$round-*.out; do echo "$f $(grep tokens/s $f | awk '{print $(NF-3)}' | tr -d , | tr '\n' ' ')"; done
