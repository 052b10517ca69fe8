# Summarises sweep.py's outputs (*-threads-N.txt) by the rule s2s_fast.backends builds from them for CPUs without
# AVX-512: per op, weights under or over CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512's elements, work under or over the
# threshold that applies (large weights: its work at one thread, any at two); per thread count and pass, the range
# of torch's time over cpu's and how many were over 1.
import collections
import glob
import re

from s2s_fast import backends

ELEMENTS, LARGE_WORK = backends.CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512
LINE = re.compile(r"(\w+) (B|M)=(\d+) (?:K=(\d+) N=(\d+)|H=(\d+))\s+work\s+[\d.]+M (fwd\+bwd|fwd)\s"
                  r".*torch/cpu ([\d.]+)")
groups = collections.defaultdict(list)
for path in sorted(glob.glob("*-threads-*.txt")):
    if path.startswith("model_ab"):
        continue
    threads = int(re.search(r"threads-(\d)", path).group(1))
    for line in open(path):
        m = LINE.search(line)
        if not m:
            continue
        op, _, rows, k, n, h, phase, ratio = m.groups()
        rows = int(rows)
        if op == "linear":
            weights, work = int(k) * int(n), rows * int(k) * int(n)
        else:
            h = int(h)
            gates = 4 if op == "lstm_cell" else 3
            weights, work = 2 * gates * h * h, rows * gates * h * 2 * h
        large = weights >= ELEMENTS
        least = (LARGE_WORK if threads == 1 else 0) if large else backends.CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512[op]
        kind = "linear" if op == "linear" else "cells"
        key = (kind, "large weights" if large else "small weights", "routed to cpu" if work >= least else "torch's own",
               threads, phase)
        groups[key].append((float(ratio), f"{op} {'M' if op == 'linear' else 'B'}={rows} work {work / 1e6:.1f}M"))
for key in sorted(groups):
    ratios = sorted(r for r, _ in groups[key])
    wins = sum(r > 1 for r in ratios)
    print(f"{' / '.join(map(str, key)):62s} n={len(ratios):2d} torch/cpu {ratios[0]:.2f}-{ratios[-1]:.2f} "
          f"median {ratios[len(ratios) // 2]:.2f}, cpu ahead in {wins}")
