"""The g2p trainer's step (s2s_fast.train.Trainer._train_step) on its first batches: 20 untimed, then the mean of 60.
args: threads, matmul precision, a scratch output directory."""
import sys, time, torch, shutil
from s2s_fast.train_config import TrainConfig
from s2s_fast.train import Trainer, collate, PAD_ID, BOS_ID, EOS_ID, resolve_run_config
from s2s_fast.distributed import setup_distributed
threads = int(sys.argv[1]); precision = sys.argv[2]; out = sys.argv[3]
torch.set_num_threads(threads); torch.set_float32_matmul_precision(precision)
cfg = TrainConfig(task="g2p", preset="g2p", output_dir=out, threads=threads, matmul_precision=precision, max_steps=100000, seed=0)
shutil.rmtree(out, ignore_errors=True)
cfg, _ = resolve_run_config(cfg, cfg.given(), False)
dist, dev = setup_distributed(torch.device("cpu"))
tr = Trainer(cfg, None, dev, dist, lambda *a: None)
batches = tr._epoch_batches()
def step(i):
    return tr._train_step(collate([tr.pairs[j] for j in batches[i]], PAD_ID, BOS_ID, EOS_ID))
for i in range(20): step(i)
t = time.perf_counter()
for i in range(20, 80): loss = step(i)
print(f"{(time.perf_counter()-t)/60*1e3:.1f} ms/step loss {loss:.5f}", flush=True)
