# In-process side-by-side on CPU tensors: the cells (lstm_cell, gru_cell) and linear through the cpu backend against
# aten (torch's own cells, torch's linear: the reference backend's), forward under no_grad and forward+backward, at
# calls at or above CPU_ONEDNN_FROM_WORK (where auto tries cpu when its products go through oneDNN). Blocks alternated,
# order reversed every other round. Usage: cells_ab.py THREADS
import statistics, sys, time
import torch
threads = int(sys.argv[1]); torch.set_num_threads(threads)
import s2s_fast
from s2s_fast import functional as F, backends
print("library", s2s_fast.__file__, "products", torch.ops.s2s_fast.cpu_products(), "threads", threads, flush=True)


def alternate(name, fns, block, rounds=8):
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            t = time.perf_counter()
            for _ in range(block):
                fns[k]()
            times[k].append((time.perf_counter() - t) / block * 1e3)
    ratios = [a / b for a, b in zip(times["aten"], times["cpu"])]
    print(f"{name:44s} cpu {statistics.median(times['cpu']):8.3f} ms  aten {statistics.median(times['aten']):8.3f} ms"
          f"  aten/cpu {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})", flush=True)


def run(op, args, label):
    leaves = [a.requires_grad_() if a is not None else None for a in args]
    work = None
    for backward in (False, True):
        def call(name):
            if backward:
                out = getattr(F, op)(*leaves, backend=name)
                out = out if isinstance(out, tuple) else (out,)
                torch.autograd.backward(out, [torch.ones_like(o) for o in out])
            else:
                with torch.no_grad():
                    getattr(F, op)(*leaves, backend=name)
        probe = time.perf_counter(); call("aten"); took = time.perf_counter() - probe
        block = max(3, int(0.05 / max(took, 1e-5)))
        seen = tuple(leaves) if backward else tuple(a.detach() if a is not None else None for a in leaves)
        auto = backends.resolve(op, torch.device("cpu"), seen, backend="auto")[0]
        alternate(f"{label} {'fwd+bwd' if backward else 'fwd'} (auto: {auto})",
                  {"cpu": lambda: call("cpu"), "aten": lambda: call(_reference_if_linear(op))}, block)


def _reference_if_linear(op):
    return "reference" if op == "linear" else "aten"


torch.manual_seed(0)
for B, H in ((8, 256), (8, 512), (64, 256), (64, 512)):
    I = H
    run("lstm_cell", (torch.randn(B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I) * H ** -0.5,
                      torch.randn(4 * H, H) * H ** -0.5, torch.zeros(4 * H), torch.zeros(4 * H)),
        f"lstm_cell B={B} H={H}")
    run("gru_cell", (torch.randn(B, I), torch.randn(B, H), torch.randn(3 * H, I) * H ** -0.5,
                     torch.randn(3 * H, H) * H ** -0.5, torch.zeros(3 * H), torch.zeros(3 * H)),
        f"gru_cell B={B} H={H}")
for M, K, N in ((64, 512, 80), (512, 512, 80), (2048, 256, 80), (64, 512, 8000), (512, 512, 8000)):
    run("linear", (torch.randn(M, K), torch.randn(N, K) * K ** -0.5, torch.zeros(N)), f"linear M={M} K={K} N={N}")
