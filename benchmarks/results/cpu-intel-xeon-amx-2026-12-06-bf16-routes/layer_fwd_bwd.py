import sys, time, torch
import s2s_fast
from s2s_fast import functional as F
threads, prec = int(sys.argv[1]), sys.argv[2]
B, H = int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads); torch.set_float32_matmul_precision(prec)
T = 64
g = torch.Generator().manual_seed(0)
x = torch.randn(T, B, H, generator=g, requires_grad=True)
h0 = torch.zeros(B, H); c0 = torch.zeros(B, H)
wih = (torch.randn(4*H, H, generator=g) / H**0.5).requires_grad_()
whh = (torch.randn(4*H, H, generator=g) / H**0.5).requires_grad_()
b1 = torch.zeros(4*H, requires_grad=True); b2 = torch.zeros(4*H, requires_grad=True)
def once():
    out = F.lstm_layer(x, h0, c0, wih, whh, b1, b2, backend="cpu")[0]
    out.sum().backward()
for _ in range(10): once()
ts = []
reps = 30 if B * H <= 4096 else 4
for r in range(7):
    t = time.perf_counter()
    for _ in range(reps): once()
    ts.append((time.perf_counter() - t) / reps * 1e3)
print(f"{s2s_fast.__file__.split('/')[2]} t{threads} {prec} B={B} H={H}: {sorted(ts)[3]:.2f} ms")
