#!/bin/bash
# Old library (/work/main, 8ce21d7) against the new (/work/wt, float32 packed weights), alternated, one thread.
F='gru_layer\.fwd(_bwd)?\[T=64,B=64,|lstm_layer\.fwd_bwd\[T=64,B=(8|64),|gru_layer\.fwd_bwd\[T=64,B=8,|train_step\.train\[model=g2p,Vs=31,Vt=43,B=128'
for round in 1 2; do
  for lib in old new; do
    dir=/work/main; [ $lib = new ] && dir=/work/wt
    (cd $dir && python -m s2s_fast bench --device cpu --threads 1 --filter "$F" --providers torch.nn,cpu,auto \
        --output-dir /work/bench-z3/pack/$lib-$round > /work/bench-z3/pack/$lib-$round.log 2>&1)
    echo "$lib $round done $(date -u +%T)" >> /work/bench-z3/pack/ab.log
  done
done
