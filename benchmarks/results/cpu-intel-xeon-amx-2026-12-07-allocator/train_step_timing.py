import sys, time, torch, shutil
from s2s_fast.train_config import TrainConfig
from s2s_fast.train import Trainer, collate, PAD_ID, BOS_ID, EOS_ID, resolve_run_config
from s2s_fast.distributed import setup_distributed
import os
if os.environ.get("HOLD"):
    from s2s_fast.allocator import hold_freed_memory
    print(hold_freed_memory())
threads = int(sys.argv[1]); precision = sys.argv[2]; out = sys.argv[3]
torch.set_num_threads(threads); torch.set_float32_matmul_precision(precision)
cfg = TrainConfig(task="g2p", preset="g2p", output_dir=out, threads=threads, matmul_precision=precision, max_steps=100000, seed=0)
shutil.rmtree(out, ignore_errors=True)
cfg, _ = resolve_run_config(cfg, cfg.given(), False)
dist, dev = setup_distributed(torch.device("cpu"))
tr = Trainer(cfg, None, dev, dist, lambda *a: None)
batches = tr._epoch_batches()
def step(i):
    # [0]: _train_step returns (loss, CTC's part) since 2026-12-07 (this script ran before, when it returned the loss)
    return tr._train_step(collate([tr.pairs[j] for j in batches[i]], PAD_ID, BOS_ID, EOS_ID))[0]
for i in range(20): step(i)
t = time.perf_counter()
import os
N = int(os.environ.get("STEPS", "60"))
for i in range(20, 20 + N): loss = step(i % len(batches))
import resource
print(f"{(time.perf_counter()-t)/N*1e3:.1f} ms/step loss {loss:.5f} maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
