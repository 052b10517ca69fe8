# A weight's gradient grad^T @ x (grad [M, N], x [M, K]) on each route csrc/cpu/products.h's weight_gradient can take
# in float32: ATen's GEMM (at::mm, MKL), oneDNN's linear with grad^T copied ("gT"), or with x^T copied and the result
# transposed into place ("xT"); "picks" names the oneDNN route weight_gradient takes. Medians of 7 timings, each of
# enough repetitions for about 20 ms, two rounds. Usage: sweep.py THREADS
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]))
linear = torch.ops.mkldnn._linear_pointwise


def timed(f):
    f()
    start = time.perf_counter()
    f()
    reps = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(reps):
            f()
        samples.append((time.perf_counter() - start) / reps)
    return sorted(samples)[3] * 1e3


SHAPES = [(64, 1536, 512), (64, 2048, 512), (128, 1536, 512), (256, 1536, 512), (256, 768, 256), (512, 1536, 512),
          (512, 2048, 256), (1024, 1024, 256), (2048, 1024, 256), (2048, 768, 192), (4096, 768, 384),
          (4096, 1536, 512), (4096, 2048, 512), (4096, 1536, 960), (8192, 1024, 256)]
print("threads", torch.get_num_threads(), flush=True)
for rnd in range(2):
    for M, N, K in SHAPES:
        g, x = torch.randn(M, N), torch.randn(M, K)
        a = timed(lambda: torch.mm(g.t(), x))
        b = timed(lambda: linear(g.t().contiguous(), x.t(), None, "none", [], None))
        c = timed(lambda: linear(x.t().contiguous(), g.t(), None, "none", [], None).t().contiguous())
        pick = "gT" if N * M <= K * M + N * K else "xT"
        print(f"r{rnd} M={M} N={N} K={K}: mm {a:.3f} ms  gT {b:.3f} ({b / a:.2f}x)  xT {c:.3f} ({c / a:.2f}x)  "
              f"picks {pick} ({(b if pick == 'gT' else c) / a:.2f}x)", flush=True)
