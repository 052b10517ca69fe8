# In-process side-by-side: the cpu backend's float32 per-step products through oneDNN with their weights packed once
# per call (cpu_packed_float32_from_rows 2, the default) against plain weights (the setting past any batch), blocks
# alternated. Usage: pack_ab.py THREADS
import os, shutil, statistics, sys, time, functools
import torch
threads = int(sys.argv[1]); torch.set_num_threads(threads)
import s2s_fast
from s2s_fast import functional as F
from s2s_fast.testing import forward_backward
from s2s_fast.train_config import TrainConfig
from s2s_fast.train import Trainer, collate, PAD_ID, BOS_ID, EOS_ID, resolve_run_config
from s2s_fast.distributed import setup_distributed
print("library", s2s_fast.__file__, "products", torch.ops.s2s_fast.cpu_products(), "threads", threads, flush=True)
SETTINGS = {"packed": 2, "plain": 10 ** 9}

def alternate(name, fn, block, rounds):
    times = {k: [] for k in SETTINGS}
    for r in range(rounds):
        for k in (SETTINGS if r % 2 == 0 else list(reversed(SETTINGS))):
            torch.ops.s2s_fast.cpu_packed_float32_from_rows(SETTINGS[k])
            t = time.perf_counter()
            for _ in range(block): fn()
            times[k].append((time.perf_counter() - t) / block * 1e3)
    torch.ops.s2s_fast.cpu_packed_float32_from_rows(2)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["packed"], times["plain"])]
    print(f"{name:45s} packed {med['packed']:8.2f} ms  plain {med['plain']:8.2f} ms  packed/plain median "
          f"{statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})", flush=True)

for op, gates in (("gru_layer", 3), ("lstm_layer", 4)):
    for T, B, H in ((64, 8, 256), (64, 64, 512)):
        args = dict(input=torch.randn(T, B, H), hx=torch.randn(B, H), weight_ih=torch.randn(gates * H, H) / H ** 0.5,
                    weight_hh=torch.randn(gates * H, H) / H ** 0.5, bias_ih=torch.randn(gates * H),
                    bias_hh=torch.randn(gates * H))
        if gates == 4: args["cx"] = torch.randn(B, H)
        f = functools.partial(getattr(F, op), backend="cpu")
        with torch.no_grad():
            alternate(f"{op} fwd T={T} B={B} H={H}", lambda: f(**args), 5 if B == 64 else 20, 8)
        alternate(f"{op} fwd+bwd T={T} B={B} H={H}", lambda: forward_backward(f, args), 3 if B == 64 else 10, 8)

out = "/tmp/pack_ab_run"
cfg = TrainConfig(task="g2p", preset="g2p", output_dir=out, threads=threads, max_steps=100000, seed=0)
shutil.rmtree(out, ignore_errors=True)
cfg, _ = resolve_run_config(cfg, cfg.given(), False)
dist, dev = setup_distributed(torch.device("cpu"))
tr = Trainer(cfg, None, dev, dist, lambda *a: None)
batches = tr._epoch_batches()
state = {"i": 0}
def step():
    i = state["i"] = state["i"] + 1
    return tr._train_step(collate([tr.pairs[j] for j in batches[i % len(batches)]], PAD_ID, BOS_ID, EOS_ID))[0]
for _ in range(10): step()
alternate("g2p trainer step (real batches, auto)", step, 10, 10)
