import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
def once(fn, n):
    s = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - s) / n * 1e6
for (N, K) in [(1536, 512), (2048, 512), (1536, 960)]:
    w = torch.randn(N, K); b = torch.randn(N)
    wn = torch.ops.mkldnn._reorder_linear_weight(w, None)
    print(N, K, wn.is_mkldnn, wn.dtype)
    for M in (1, 7, 8, 37, 64, 128):
        x = torch.randn(M, K)
        wm = torch.ops.mkldnn._reorder_linear_weight(w, M)
        ref = torch.addmm(b, x, w.t())
        routes = {"aten": lambda: torch.addmm(b, x, w.t()),
                  "dnn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
                  "pk_none": lambda: torch.ops.mkldnn._linear_pointwise(x, wn, b, "none", [], ""),
                  "pk_M": lambda: torch.ops.mkldnn._linear_pointwise(x, wm, b, "none", [], "")}
        for f in routes.values(): assert torch.allclose(f(), ref, atol=1e-3, rtol=1e-3)
        n = max(20, int(1e9 / (2 * M * N * K)))
        times = {k: [] for k in routes}
        for _ in range(5):
            for k, f in routes.items(): times[k].append(once(f, n))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  M={M:4d} " + "  ".join(f"{k} {v:7.1f}" for k, v in med.items()) +
              f"  pk_none/dnn {med['pk_none']/med['dnn']:.2f} pk_none/aten {med['pk_none']/med['aten']:.2f}", flush=True)
