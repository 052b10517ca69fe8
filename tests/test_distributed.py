"""DistributedDataParallel on the CPU: two gloo processes (as torchrun starts them) keep identical replicas and
the loss falls."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from s2s_fast.train import train
from s2s_fast.train_config import TrainConfig


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    config = TrainConfig(task="reverse", output_dir=run_dir, toy_train_size=400, toy_eval_size=40, toy_max_len=8,
                         batch_tokens=120, max_steps=40, warmup_steps=3, lr=1e-2, eval_every=20, log_every=10,
                         progress="off", device="cpu", threads=1, model={"hidden_size": 16, "embed_dim": 8,
                                                                         "dropout": 0.2})
    result = train(config, echo=lambda line: None)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              os.path.join(run_dir, f"replica{rank}.safetensors"))


def test_two_gloo_processes_keep_replicas_identical_and_learn(tmp_path):
    run_dir = str(tmp_path / "run")
    mp.spawn(_worker, args=(2, _free_port(), run_dir), nprocs=2, join=True)
    replicas = [load_file(os.path.join(run_dir, f"replica{rank}.safetensors")) for rank in range(2)]
    assert replicas[0].keys() == replicas[1].keys()
    for name in replicas[0]:
        assert torch.equal(replicas[0][name], replicas[1][name]), name
    events = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    losses = [event["loss"] for event in events if event["kind"] == "train"]
    assert len(losses) == 4 and losses[-1] < 0.95 * losses[0]
    log = open(os.path.join(run_dir, "train.log")).read()
    assert "2 process(es)" in log
    assert os.path.isfile(os.path.join(run_dir, "checkpoints", "latest.json"))
