# The products of one layer forward+backward (aten::mm and oneDNN linear self time, torch.profiler) with the layer
# weight gradients through oneDNN and through ATen (cpu_onednn_weight_gradients), three rounds alternated.
# Usage: profile_products.py THREADS OP B H
import sys, functools, torch
torch.set_num_threads(int(sys.argv[1]))
import s2s_fast
from s2s_fast import functional as F
from s2s_fast.testing import forward_backward
from torch.profiler import profile, ProfilerActivity
op = sys.argv[2]; B = int(sys.argv[3]); H = int(sys.argv[4]); T = 64
g = 4 if op == "lstm_layer" else 3
m = (torch.nn.LSTM if g == 4 else torch.nn.GRU)(H, H)
args = dict(input=torch.randn(T, B, H), hx=torch.randn(B, H), weight_ih=m.weight_ih_l0.detach(),
            weight_hh=m.weight_hh_l0.detach(), bias_ih=m.bias_ih_l0.detach(), bias_hh=m.bias_hh_l0.detach())
if g == 4: args["cx"] = torch.randn(B, H)
f = functools.partial(getattr(F, op), backend="cpu")
n = 20 if B < 64 else 3
res = {True: [], False: []}
for rnd in range(3):
    for through in ((True, False) if rnd % 2 == 0 else (False, True)):
        torch.ops.s2s_fast.cpu_onednn_weight_gradients(through)
        for _ in range(2): forward_backward(f, args)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(n): forward_backward(f, args)
        ev = {e.key: e for e in p.key_averages()}
        tot = sum(ev[k].self_cpu_time_total for k in ("aten::mm", "mkldnn::_linear_pointwise") if k in ev)
        tot = tot / n / 1e3
        res[through].append(tot)
print(op, "B", B, "H", H, "threads", sys.argv[1], "products ms/iter: oneDNN", [round(x, 1) for x in res[True]],
      "ATen", [round(x, 1) for x in res[False]])
