# Summarises sweep.py's outputs (*-threads-N.txt, run in this folder) by what s2s_fast.backends does with each size
# on this CPU (a CPU without AVX-512: CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512, CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512),
# asking the routing code itself (backends._cpu_onednn_pays) at the file's thread count: per op, weights under or
# over the large-weights elements, routed to cpu or kept on torch's own; per thread count and pass, the range and
# median of torch's time over cpu's and how many were over 1.
import collections
import glob
import re
import statistics

import torch

from s2s_fast import backends

assert not backends.cpu_has_avx512(), "this summary is of the rule for CPUs without AVX-512"
assert backends._cpu_products_through_onednn(torch.float32), "the routing tested needs the cpu products on oneDNN"
ELEMENTS = backends.CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512[0]
LINE = re.compile(r"(\w+) (B|M)=(\d+) (?:K=(\d+) N=(\d+)|H=(\d+))\s+work\s+[\d.]+M (fwd\+bwd|fwd)\s"
                  r".*torch/cpu ([\d.]+)")


def call_args(op, rows, k, n, h):
    """Empty tensors of the sweep's shapes (the routing reads shapes only)."""
    e = torch.empty
    if op == "linear":
        return e(rows, k), e(n, k), None
    gates = 4 if op == "lstm_cell" else 3
    state = (e(rows, h),) * (2 if op == "lstm_cell" else 1)
    return (e(rows, h), *state, e(gates * h, h), e(gates * h, h), None, None)


groups = collections.defaultdict(list)
for path in sorted(glob.glob("*-threads-*.txt")):
    if path.startswith("model_ab"):
        continue
    threads = int(re.search(r"threads-(\d)", path).group(1))
    torch.set_num_threads(threads)
    for line in open(path):
        m = LINE.search(line)
        if not m:
            continue
        op, _, rows, k, n, h, phase, ratio = m.groups()
        args = call_args(op, int(rows), *(int(v) if v else None for v in (k, n, h)))
        weights = args[1].numel() if op == "linear" else sum(w.numel() for w in backends._weights(op, args))
        routed = backends._cpu_onednn_pays(op, args)
        key = ("linear" if op == "linear" else "cells", "large weights" if weights >= ELEMENTS else "small weights",
               "routed to cpu" if routed else "torch's own", threads, phase)
        groups[key].append(float(ratio))
for key in sorted(groups):
    ratios = groups[key]
    print(f"{' / '.join(map(str, key)):62s} n={len(ratios):2d} torch/cpu {min(ratios):.2f}-{max(ratios):.2f} "
          f"median {statistics.median(ratios):.2f}, cpu ahead in {sum(r > 1 for r in ratios)}")
