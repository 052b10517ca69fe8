"""Weight gradient grad^T @ x ([N, K] from M rows): float32 (ATen) against bfloat16 (rounded operands, ATen's bf16
GEMM, widened), as products.h's weight_gradient takes them. Median of 7 rounds."""
import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1]))
def f32(g, x): return torch.mm(g.t(), x)
def bf16(g, x): return torch.mm(g.to(torch.bfloat16).t(), x.to(torch.bfloat16)).float()
for N, K in ((768, 192), (768, 384), (1536, 960), (1536, 384), (1024, 256), (2048, 512), (384, 384)):
    for M in (16, 32, 48, 64, 128, 256, 512, 2048):
        g, x = torch.randn(M, N), torch.randn(M, K)
        reps = max(5, min(500, int(2e8 / (M * N * K))))
        t = {"f32": [], "bf16": []}
        for _ in range(7):
            for name, fn in (("f32", f32), ("bf16", bf16)):
                fn(g, x)
                s = time.perf_counter()
                for _ in range(reps): fn(g, x)
                t[name].append((time.perf_counter() - s) / reps * 1e6)
        a, b = statistics.median(t["f32"]), statistics.median(t["bf16"])
        print(f"N={N:5d} K={K:4d} M={M:5d} work={M*N*K/1e6:8.2f}M f32 {a:9.1f} us bf16 {b:9.1f} us bf16/f32 {b/a:.2f}", flush=True)
