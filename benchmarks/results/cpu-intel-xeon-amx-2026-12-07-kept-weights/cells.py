"""cpu against aten cells under torch.no_grad (decoder-step sizes), alternating, median of 7 rounds. argv: threads,
matmul precision."""
"""cpu against aten cells under no_grad: alternating, median of rounds."""
import sys, time, statistics, torch
import s2s_fast.functional as F
threads, precision = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads); torch.set_float32_matmul_precision(precision)
torch.manual_seed(0)
sizes = [(1, 576, 384), (2, 576, 384), (4, 576, 384), (8, 576, 384), (32, 576, 384), (64, 576, 384), (128, 576, 384), (320, 576, 384),
         (1000, 576, 384), (3000, 576, 384), (5000, 576, 384), (16, 768, 512), (64, 768, 512), (320, 768, 512), (1280, 768, 512)]
for cell in ("lstm_cell", "gru_cell"):
    for B, I, H in sizes:
        g = 4 if cell == "lstm_cell" else 3
        x = torch.randn(B, I); h = torch.randn(B, H); c = torch.randn(B, H)
        w_ih = torch.randn(g*H, I) * 0.05; w_hh = torch.randn(g*H, H) * 0.05; b1 = torch.randn(g*H); b2 = torch.randn(g*H)
        args = (x, h, c, w_ih, w_hh, b1, b2) if cell == "lstm_cell" else (x, h, w_ih, w_hh, b1, b2)
        fn = getattr(F, cell)
        reps = max(3, min(300, int(3e8 / (B * g * H * (I + H)) )))
        times = {"cpu": [], "aten": []}
        with torch.no_grad():
            for be in times: fn(*args, backend=be)
            for r in range(7):
                for be in times:
                    t = time.perf_counter()
                    for _ in range(reps): fn(*args, backend=be)
                    times[be].append((time.perf_counter() - t) / reps * 1e3)
        m = {be: statistics.median(v) for be, v in times.items()}
        work = B * g * H * (I + H)
        print(f"{cell} t={threads} {precision:7s} B={B:5d} I={I} H={H} work={work/1e6:8.1f}M cpu {m['cpu']:8.3f} ms aten {m['aten']:8.3f} ms ratio cpu/aten {m['cpu']/m['aten']:.2f}", flush=True)
