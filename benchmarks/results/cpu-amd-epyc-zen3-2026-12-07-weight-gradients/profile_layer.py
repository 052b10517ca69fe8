# One forward+backward of torch.nn's layer and of the cpu backend's, T=64, B=64, H=512, three iterations under
# torch.profiler, ops by self time. Usage: profile_layer.py THREADS gru|lstm
import sys, torch, s2s_fast, s2s_fast.nn
from torch.profiler import profile, ProfilerActivity
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
cell = sys.argv[2] if len(sys.argv) > 2 else "gru"
T, B, H = 64, 64, 512
x = torch.randn(T, B, H, requires_grad=True)
ref = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(H, H)
ours = (s2s_fast.nn.GRU if cell == "gru" else s2s_fast.nn.LSTM)(H, H, backend="cpu")
ours.load_state_dict(ref.state_dict())
def run(m):
    out, _ = m(x)
    out.sum().backward()
for m in (ref, ours, ref, ours):
    run(m)
for name, m in (("torch.nn", ref), ("cpu", ours)):
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3):
            run(m)
    print("=====", name)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
