# In-process side-by-side: the g2p trainer's step (auto, real batches) with auto's routing of the cells and linear to
# the cpu backend as it is ("routed": CPU_ONEDNN_FROM_WORK's thresholds), with the cells sent to torch's own instead
# ("cells to aten"), and with the cells and linear sent to torch's own ("both to torch"): the thresholds raised out of
# reach between blocks, order reversed every other round. Also counts, for one step, which backend auto picks for
# each op. Usage: routing_ab.py THREADS
import collections, shutil, statistics, sys, time
import torch
threads = int(sys.argv[1]); torch.set_num_threads(threads)
import s2s_fast
from s2s_fast import backends
from s2s_fast.train_config import TrainConfig
from s2s_fast.train import Trainer, collate, PAD_ID, BOS_ID, EOS_ID, resolve_run_config
from s2s_fast.distributed import setup_distributed
print("library", s2s_fast.__file__, "threads", threads, flush=True)
ROUTED = dict(backends.CPU_ONEDNN_FROM_WORK)
NEVER = 1 << 62
VARIANTS = {"routed": ROUTED, "cells to aten": dict(ROUTED, lstm_cell=NEVER, gru_cell=NEVER),
            "both to torch": dict(ROUTED, lstm_cell=NEVER, gru_cell=NEVER, linear=NEVER)}

for cell in ("lstm", "gru"):
    out = f"/tmp/routing_ab_run_{cell}"
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

    for _ in range(8):
        step()
    picks = collections.Counter()
    resolve = backends.resolve

    def counting(op, *rest, **kwargs):
        chosen = resolve(op, *rest, **kwargs)
        picks[f"{op}:{chosen[0]}"] += 1
        return chosen

    backends.resolve = counting
    step()
    backends.resolve = resolve
    print(f"{cell}: one step's picks", dict(picks), flush=True)
    times = {k: [] for k in VARIANTS}
    for r in range(8):
        for k in (list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))):
            backends.CPU_ONEDNN_FROM_WORK.update(VARIANTS[k])
            t = time.perf_counter()
            for _ in range(5):
                step()
            times[k].append((time.perf_counter() - t) / 5 * 1e3)
    backends.CPU_ONEDNN_FROM_WORK.update(ROUTED)
    base = times["routed"]
    print(f"g2p trainer step, {cell}: " + "  ".join(
        f"{k} {statistics.median(v):.1f} ms" + ("" if k == "routed" else
        f" ({statistics.median([a / b for a, b in zip(v, base)]):.3f} of routed, "
        f"{min(a / b for a, b in zip(v, base)):.3f}-{max(a / b for a, b in zip(v, base)):.3f})")
        for k, v in times.items()), flush=True)
