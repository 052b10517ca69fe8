# In-process side-by-side: the cpu backend's float32 products through oneDNN (cpu_products("onednn"), the default off
# Intel's CPUs) against ATen's GEMM (cpu_products("aten")), blocks alternated, with torch.nn's layer timed in the same
# rounds; then the g2p trainer's step (auto, LSTM and GRU cells, real batches: under "aten" auto also stops sending
# linear and the cells to cpu). Weight gradients through at::mm in both (the AVX2 default).
# Usage: products_ab.py THREADS
import functools, shutil, statistics, sys, time
import torch
threads = int(sys.argv[1]); torch.set_num_threads(threads)
import s2s_fast
import s2s_fast.cpu
from s2s_fast import functional as F
from s2s_fast.testing import forward_backward
from s2s_fast.train_config import TrainConfig
from s2s_fast.train import Trainer, collate, PAD_ID, BOS_ID, EOS_ID, resolve_run_config
from s2s_fast.distributed import setup_distributed
print("library", s2s_fast.__file__, "products", torch.ops.s2s_fast.cpu_products(), "threads", threads,
      "default through oneDNN", torch.ops.s2s_fast.cpu_onednn_weight_gradients(), flush=True)
DEFAULT = torch.ops.s2s_fast.cpu_products()


def alternate(name, fns, block, rounds):
    """fns: {label: (setting or None, fn)}; times each label's block in turn, order reversed every other round."""
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            setting, fn = fns[k]
            if setting is not None:
                s2s_fast.cpu.use_products(setting)
            t = time.perf_counter()
            for _ in range(block):
                fn()
            times[k].append((time.perf_counter() - t) / block * 1e3)
    s2s_fast.cpu.use_products(DEFAULT)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["aten"], times["onednn"])]
    line = f"{name:40s} " + "  ".join(f"{k} {v:8.2f} ms" for k, v in med.items())
    line += f"  aten/onednn {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
    if "torch.nn" in times:
        nn_ratios = [a / b for a, b in zip(times["torch.nn"], times["aten"])]
        line += f"  torch.nn/aten {statistics.median(nn_ratios):.3f} ({min(nn_ratios):.3f}-{max(nn_ratios):.3f})"
    print(line, flush=True)


for op, gates in (("gru_layer", 3), ("lstm_layer", 4)):
    for T, B, H in ((64, 1, 512), (64, 8, 256), (64, 64, 512)):
        module = (torch.nn.GRU if gates == 3 else torch.nn.LSTM)(H, H)
        args = dict(input=torch.randn(T, B, H), hx=torch.randn(B, H), weight_ih=module.weight_ih_l0.detach(),
                    weight_hh=module.weight_hh_l0.detach(), bias_ih=module.bias_ih_l0.detach(),
                    bias_hh=module.bias_hh_l0.detach())
        if gates == 4:
            args["cx"] = torch.randn(B, H)
        f = functools.partial(getattr(F, op), backend="cpu")
        x = args["input"].clone().requires_grad_()

        def torch_nn():
            out, _ = module(x)
            out.sum().backward()

        block = 3 if B == 64 else 10
        alternate(f"{op} fwd+bwd T={T} B={B} H={H}", {"onednn": ("onednn", lambda: forward_backward(f, args)),
                                                     "aten": ("aten", lambda: forward_backward(f, args)),
                                                     "torch.nn": (None, torch_nn)}, block, 8)

for cell in ("lstm", "gru"):
    out = f"/tmp/products_ab_run_{cell}"
    cfg = TrainConfig(task="g2p", preset="g2p", output_dir=out, threads=threads, max_steps=100000, seed=0,
                      model={"cell": cell})
    shutil.rmtree(out, ignore_errors=True)
    cfg, _ = resolve_run_config(cfg, cfg.given(), False)
    dist, dev = setup_distributed(torch.device("cpu"))
    tr = Trainer(cfg, None, dev, dist, lambda *a: None)
    batches = tr._epoch_batches()
    state = {"i": 0}

    def step():
        i = state["i"] = state["i"] + 1
        return tr._train_step(collate([tr.pairs[j] for j in batches[i % len(batches)]], PAD_ID, BOS_ID, EOS_ID))[0]

    for _ in range(10):
        step()
    alternate(f"g2p trainer step, {cell} (real batches, auto)", {"onednn": ("onednn", step), "aten": ("aten", step)},
              10, 10)
