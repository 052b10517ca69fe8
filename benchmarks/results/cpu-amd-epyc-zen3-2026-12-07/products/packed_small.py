import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
def once(fn, n):
    s = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - s) / n * 1e6
for (N, K) in [(4096, 1024), (3072, 1024), (2048, 1024)]:
    w = torch.randn(N, K); b = torch.randn(N)
    wn = torch.ops.mkldnn._reorder_linear_weight(w, None)
    for M in (1, 2, 3, 4, 6):
        x = torch.randn(M, K)
        routes = {"aten": lambda: torch.addmm(b, x, w.t()),
                  "dnn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
                  "pk": lambda: torch.ops.mkldnn._linear_pointwise(x, wn, b, "none", [], "")}
        n = 100
        times = {k: [] for k in routes}
        for _ in range(5):
            for k, f in routes.items(): times[k].append(once(f, n))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"N={N} K={K} M={M:4d} " + "  ".join(f"{k} {v:7.1f}" for k, v in med.items()) +
              f"  pk/dnn {med['pk']/med['dnn']:.2f} pk/aten {med['pk']/med['aten']:.2f}", flush=True)
