#!/bin/bash
# Side by side, one per core: the g2p trainer under glibc (train's thresholds) and under another allocator.
# usage: alloc.sh ROUND STEPS A_KIND B_KIND   (kinds: glibc, mimalloc, ...); A on core 0, B on core 1
cd /tmp/s20  # its outputs, r$round-KIND-cCORE.out, are kept here as r5-*.out
round=$1 steps=$2; shift 2
run() {  # kind core
  local kind=$1 core=$2 dir=/tmp/s20/r$round-$1-c$2 pre=""
  rm -rf $dir
  [[ $kind == mimalloc ]] && pre=/tmp/mi/libmimalloc.so
  LD_PRELOAD=$pre taskset -c $core /usr/bin/time -v python -m s2s_fast train --task g2p --preset g2p --threads 1 \
    --matmul-precision medium --progress off --eval-every 100000 --save-every 100000 --seed 6 \
    --output-dir $dir --max-steps $steps > $dir.out 2>&1
}
run $1 0 & run $2 1 & wait
for f in r$round-*.out; do echo "$f $(grep tokens/s $f | awk '{print $(NF-3)}' | tr -d , | tr '\n' ' ')"; grep "Maximum resident" $f; done
