# In-process side by side on CPU tensors: the cells (lstm_cell, gru_cell) and linear through the cpu backend against
# torch's own (aten's cells; torch's linear, the reference backend's), forward under no_grad and forward+backward,
# over the sizes where auto sends them to cpu when its products go through oneDNN (CPU_ONEDNN_FROM_WORK) and
# beyond. Timing: s2s_fast.bench.timing.alternate_blocks (blocks alternated, order reversed every other round).
# Usage: sweep.py THREADS [cells|linear|all|wide] ("wide": few rows against large weights, added after the first
# runs, which it leaves as they were).
import sys

import torch

threads = int(sys.argv[1])
which = sys.argv[2] if len(sys.argv) > 2 else "all"
torch.set_num_threads(threads)
import s2s_fast  # noqa: E402
from s2s_fast import backends, functional as F  # noqa: E402
from s2s_fast.bench.timing import alternate_blocks, block_size  # noqa: E402

CPU = torch.device("cpu")
print("library", s2s_fast.__file__, "products", torch.ops.s2s_fast.cpu_products(), "threads", threads,
      "capability", torch.backends.cpu.get_cpu_capability(), flush=True)


def run(op, args, label, work):
    leaves = [a.requires_grad_() if a is not None else None for a in args]
    torch_own = "reference" if op == "linear" else "aten"
    for backward in (False, True):
        def call(name):
            if backward:
                out = getattr(F, op)(*leaves, backend=name)
                out = out if isinstance(out, tuple) else (out,)
                torch.autograd.backward(out, [torch.ones_like(o) for o in out])
            else:
                with torch.no_grad():
                    getattr(F, op)(*leaves, backend=name)
        seen = tuple(leaves) if backward else tuple(a.detach() if a is not None else None for a in leaves)
        auto = backends.resolve(op, CPU, seen, backend="auto")[0]
        block = block_size(lambda: call(torch_own), 0.05, CPU)
        measured = alternate_blocks({"cpu": lambda: call("cpu"), "torch": lambda: call(torch_own)}, block, rounds=8)
        print(f"{label:34s} work {work / 1e6:8.1f}M {'fwd+bwd' if backward else 'fwd    '} auto {auto:5s} "
              f"cpu {measured.median_ms('cpu'):8.3f} ms torch {measured.median_ms('torch'):8.3f} ms  "
              f"{measured.ratio_line('torch', 'cpu')}", flush=True)


torch.manual_seed(0)
if which in ("cells", "all"):
    for B in (8, 64, 256):
        for H in (256, 512, 1024):
            run("lstm_cell", (torch.randn(B, H), torch.randn(B, H), torch.randn(B, H),
                              torch.randn(4 * H, H) * H ** -0.5, torch.randn(4 * H, H) * H ** -0.5,
                              torch.zeros(4 * H), torch.zeros(4 * H)), f"lstm_cell B={B} H={H}", B * 4 * H * 2 * H)
            run("gru_cell", (torch.randn(B, H), torch.randn(B, H), torch.randn(3 * H, H) * H ** -0.5,
                             torch.randn(3 * H, H) * H ** -0.5, torch.zeros(3 * H), torch.zeros(3 * H)),
                f"gru_cell B={B} H={H}", B * 3 * H * 2 * H)
if which in ("linear", "all"):
    for M, K, N in ((64, 512, 80), (512, 512, 80), (2048, 512, 80), (8192, 512, 80), (64, 512, 1000),
                    (256, 512, 1000), (1024, 512, 512), (64, 512, 4000), (128, 1024, 2000), (64, 512, 8000),
                    (64, 1024, 8000), (256, 512, 8000), (16, 512, 32000), (256, 256, 32000)):
        run("linear", (torch.randn(M, K), torch.randn(N, K) * K ** -0.5, torch.zeros(N)),
            f"linear M={M} K={K} N={N}", M * K * N)
if which == "wide":
    for M in (1, 4, 16, 64, 256):
        for N in (1000, 2000, 4000, 8000, 32000):
            K = 512
            run("linear", (torch.randn(M, K), torch.randn(N, K) * K ** -0.5, torch.zeros(N)),
                f"linear M={M} K={K} N={N}", M * K * N)
    for B in (1, 8, 32):
        for H in (768, 1024):
            run("lstm_cell", (torch.randn(B, H), torch.randn(B, H), torch.randn(B, H),
                              torch.randn(4 * H, H) * H ** -0.5, torch.randn(4 * H, H) * H ** -0.5,
                              torch.zeros(4 * H), torch.zeros(4 * H)), f"lstm_cell B={B} H={H}", B * 4 * H * 2 * H)
            run("gru_cell", (torch.randn(B, H), torch.randn(B, H), torch.randn(3 * H, H) * H ** -0.5,
                             torch.randn(3 * H, H) * H ** -0.5, torch.zeros(3 * H), torch.zeros(3 * H)),
                f"gru_cell B={B} H={H}", B * 3 * H * 2 * H)
