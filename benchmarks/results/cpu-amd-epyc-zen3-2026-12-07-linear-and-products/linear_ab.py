# In-process side-by-side: the cpu backend's linear, forward+backward, its float32 weight gradient (grad^T @ x)
# through oneDNN (cpu_onednn_weight_gradients True) against ATen's GEMM (False, the default on CPUs without AVX-512),
# blocks alternated, torch.nn.functional.linear timed in the same rounds. Vocabulary-wide outputs (N = 8,000, a
# translation model's output layer) and g2p's (N = 80). Usage: linear_ab.py THREADS
import statistics, sys, time
import torch
threads = int(sys.argv[1]); torch.set_num_threads(threads)
import s2s_fast
from s2s_fast import functional as F
print("library", s2s_fast.__file__, "products", torch.ops.s2s_fast.cpu_products(), "threads", threads,
      "default through oneDNN", torch.ops.s2s_fast.cpu_onednn_weight_gradients(), flush=True)
DEFAULT = torch.ops.s2s_fast.cpu_onednn_weight_gradients()


def alternate(name, fns, block, rounds):
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            setting, fn = fns[k]
            if setting is not None:
                torch.ops.s2s_fast.cpu_onednn_weight_gradients(setting)
            t = time.perf_counter()
            for _ in range(block):
                fn()
            times[k].append((time.perf_counter() - t) / block * 1e3)
    torch.ops.s2s_fast.cpu_onednn_weight_gradients(DEFAULT)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["aten"], times["onednn"])]
    nn_ratios = [a / b for a, b in zip(times["torch.nn"], times["aten"])]
    print(f"{name:34s} " + "  ".join(f"{k} {v:8.3f} ms" for k, v in med.items())
          + f"  aten/onednn {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
          + f"  torch.nn/aten {statistics.median(nn_ratios):.3f} ({min(nn_ratios):.3f}-{max(nn_ratios):.3f})",
          flush=True)


torch.manual_seed(0)
for N in (8000, 80):
    for M, K in ((64, 256), (64, 512), (512, 512), (2048, 256), (2048, 512)):
        x = torch.randn(M, K, requires_grad=True)
        w = (torch.randn(N, K) * K ** -0.5).requires_grad_()
        b = torch.zeros(N, requires_grad=True)
        g = torch.randn(M, N)

        def ours():
            y = F.linear(x, w, b, backend="cpu")
            torch.autograd.grad(y, (x, w, b), g)

        def theirs():
            y = torch.nn.functional.linear(x, w, b)
            torch.autograd.grad(y, (x, w, b), g)

        work = M * N * K
        block = max(1, int(2e9 / (3 * work)))
        alternate(f"linear fwd+bwd M={M} K={K} N={N}", {"onednn": (True, ours), "aten": (False, ours),
                                                          "torch.nn": (None, theirs)}, block, 8)
