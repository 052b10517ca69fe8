"""The g2p trainer's step in a loop, for `perf record -g -p PID -- sleep 15`: one thread, medium; after 30 warm-up
steps it writes its pid to the file named by argv[1], then runs 60 more."""
import os
import shutil
import sys
import time

import torch

from s2s_fast.distributed import setup_distributed
from s2s_fast.train import BOS_ID, EOS_ID, PAD_ID, Trainer, collate, resolve_run_config
from s2s_fast.train_config import TrainConfig

torch.set_num_threads(1)
torch.set_float32_matmul_precision("medium")
out = "/tmp/perf-step-run"
shutil.rmtree(out, ignore_errors=True)
config = TrainConfig(task="g2p", preset="g2p", output_dir=out, threads=1, matmul_precision="medium", max_steps=100000)
config, _ = resolve_run_config(config, config.given(), False)
distributed, device = setup_distributed(torch.device("cpu"))
trainer = Trainer(config, None, device, distributed, lambda *args: None)
batches = trainer._epoch_batches()


def step(i):
    return trainer._train_step(collate([trainer.pairs[j] for j in batches[i]], PAD_ID, BOS_ID, EOS_ID))


for i in range(30):
    step(i)
with open(sys.argv[1], "w") as file:
    file.write(str(os.getpid()))
start = time.perf_counter()
for i in range(30, 90):
    step(i)
print("s/step", (time.perf_counter() - start) / 60)
