# Forward only (no gradient) of one LSTM layer direction: cpu against aten, alternating in one process.
import sys, time, torch
from s2s_fast import functional as F
threads, prec = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads); torch.set_float32_matmul_precision(prec)
g = torch.Generator().manual_seed(0)
def case(T, B, I, H, lengths):
    x = torch.randn(T, B, I, generator=g)
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)
    w = [torch.randn(4*H, I, generator=g) / I**0.5, torch.randn(4*H, H, generator=g) / H**0.5, torch.zeros(4*H), torch.zeros(4*H)]
    lens = torch.randint(T // 2 + 1, T + 1, (B,), generator=g) if lengths else None
    if lens is not None: lens[0] = T
    def run(backend):
        with torch.no_grad():
            return F.lstm_layer(x, h0, c0, *w, lengths=lens, backend=backend)[0]
    reps = max(3, int(2e8 / (T * B * 4 * H * (I + H)) ))
    times = {"cpu": [], "aten": []}
    for b in times: run(b)
    for r in range(7):
        for b in times:
            t = time.perf_counter()
            for _ in range(reps): run(b)
            times[b].append((time.perf_counter() - t) / reps * 1e3)
    med = {b: sorted(v)[3] for b, v in times.items()}
    print(f"t{threads} {prec} T={T} B={B} I={I} H={H} lengths={lengths}: cpu {med['cpu']:.2f} ms aten {med['aten']:.2f} ms cpu/aten {med['cpu']/med['aten']:.2f}", flush=True)
for T, B, I, H in [(16, 1, 192, 384), (16, 8, 192, 384), (16, 64, 192, 384), (16, 256, 768, 384), (64, 8, 256, 256), (64, 64, 512, 512)]:
    for lengths in (False, True):
        case(T, B, I, H, lengths)
