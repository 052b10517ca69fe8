# fp32 per-call product routes, alternated in rounds (median of rounds): ATen addmm (MKL), oneDNN linear with the
# dense weight (reordered each call), oneDNN linear with the weight packed once (mkldnn::_reorder_linear_weight).
import sys, time, statistics, torch
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
def once(fn, n):
    s = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - s) / n * 1e6
shapes = [(1536, 512, 64), (1536, 512, 8), (1536, 256, 8), (2048, 512, 64), (1024, 256, 8), (2048, 512, 1),
          (1536, 960, 128), (1536, 384, 128), (1536, 576, 128)]
for (N, K, M) in shapes:
    w = torch.randn(N, K); b = torch.randn(N); x = torch.randn(M, K)
    wp = torch.ops.mkldnn._reorder_linear_weight(w, M)
    ref = torch.addmm(b, x, w.t())
    for f in (lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
              lambda: torch.ops.mkldnn._linear_pointwise(x, wp, b, "none", [], "")):
        assert torch.allclose(f(), ref, atol=1e-3, rtol=1e-3)
    routes = {"aten": lambda: torch.addmm(b, x, w.t()),
              "dnn": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""),
              "dnn_packed": lambda: torch.ops.mkldnn._linear_pointwise(x, wp, b, "none", [], "")}
    n = max(20, int(2e8 / (2 * M * N * K) * 5))
    for f in routes.values(): once(f, n // 4 + 1)
    times = {k: [] for k in routes}
    for _ in range(7):
        for k, f in routes.items(): times[k].append(once(f, n))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"N={N:5d} K={K:4d} M={M:4d}  " + "  ".join(f"{k} {v:8.1f}us" for k, v in med.items()) +
          f"   dnn/aten {med['dnn']/med['aten']:.2f}  packed/aten {med['dnn_packed']/med['aten']:.2f}"
          f"  packed/dnn {med['dnn_packed']/med['dnn']:.2f}", flush=True)
