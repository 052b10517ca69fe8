#!/bin/bash
# Does a dev evaluation slow the training steps after it? Two fresh g2p trainers side by side, one per core:
# A with dev evaluations (greedy, every EVERY steps), B with none. usage: evals.sh ROUND STEPS EVERY A_EXTRA B_EXTRA
cd /tmp/s20  # its outputs, e$round-NAME.out, are kept here as r6-*.out
round=$1 steps=$2 every=$3
run() {  # name core every extra-env
  local name=$1 core=$2 ev=$3 dir=/tmp/s20/e$round-$1
  rm -rf $dir
  env $4 taskset -c $core python -m s2s_fast train --task g2p --preset g2p --threads 1 --matmul-precision medium \
    --progress off --eval-every $ev --save-every 100000 --seed 6 --output-dir $dir --max-steps $steps > $dir.out 2>&1
}
run evals 0 $every "${4:-X=1}" & run none 1 100000 "${5:-X=1}" & wait
for f in e$round-*.out; do echo "$f $(grep tokens/s $f | awk '{print $(NF-3)}' | tr -d , | tr '\n' ' ')"; done
