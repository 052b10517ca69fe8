"""One LSTM layer direction under torch.no_grad at medium, cpu against aten alternating (median of 9 rounds of 20
calls): the sizes CPU_BF16_INFERENCE_PREFERS_CPU sends to cpu while the per-step products stay float32. argv: threads."""
import sys, time, statistics, torch
import s2s_fast.functional as F
torch.set_num_threads(int(sys.argv[1])); torch.set_float32_matmul_precision("medium")
for T, B, I, H in [(16, 6, 512, 256), (16, 7, 512, 256), (64, 6, 512, 256), (64, 7, 512, 256), (16, 8, 512, 256),
                   (16, 10, 512, 256), (16, 3, 768, 384), (16, 4, 768, 384)]:
    g = torch.Generator().manual_seed(0)
    args = dict(input=torch.randn(T, B, I, generator=g), hx=torch.randn(B, H, generator=g), cx=torch.randn(B, H, generator=g),
                weight_ih=torch.randn(4*H, I, generator=g) * H**-0.5, weight_hh=torch.randn(4*H, H, generator=g) * H**-0.5,
                bias_ih=torch.randn(4*H, generator=g), bias_hh=torch.randn(4*H, generator=g))
    t = {"cpu": [], "aten": []}
    reps = 20
    with torch.no_grad():
        for be in t: F.lstm_layer(**args, backend=be)
        for _ in range(9):
            for be in t:
                s = time.perf_counter()
                for _ in range(reps): F.lstm_layer(**args, backend=be)
                t[be].append((time.perf_counter() - s) / reps * 1e3)
    c, a = statistics.median(t["cpu"]), statistics.median(t["aten"])
    step, per_step = B*4*H*(I+H), B*4*H*H
    print(f"T={T} B={B} I={I} H={H} step work {step/1e6:.2f}M per-step product {per_step/1e6:.2f}M cpu {c:.3f} ms aten {a:.3f} ms cpu/aten {c/a:.2f}", flush=True)
