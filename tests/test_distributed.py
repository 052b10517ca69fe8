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


def _join(rank: int, world: int, port: int) -> None:
    """This process's place in the group, as torchrun's environment gives it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))


def _train_and_write_outcome(run_dir: str, path: str, suffix=lambda: "") -> None:
    """Train; write what the process ended with ("trained", or the error it raised) and ``suffix()`` to ``path``."""
    try:
        train(_config(run_dir), echo=lambda line: None)
        outcome = "trained"
    except BaseException as error:  # the point: which error, on which process
        outcome = f"{type(error).__name__}: {error}"
    with open(path, "w") as file:
        file.write(outcome + suffix())


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    _join(rank, world, port)
    result = train(_config(run_dir), echo=lambda line: None)
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              os.path.join(run_dir, f"replica{rank}.safetensors"))


def _refused_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    """A second run into the same directory: what each process raised, in error<rank>.txt."""
    _join(rank, world, port)
    _train_and_write_outcome(run_dir, os.path.join(run_dir, f"error{rank}.txt"))


def _config(run_dir: str) -> TrainConfig:
    return TrainConfig(task="reverse", output_dir=run_dir, toy_train_size=400, toy_eval_size=40, toy_max_len=8,
                       batch_tokens=120, max_steps=40, warmup_steps=3, lr=1e-2, eval_every=20, log_every=10,
                       progress="off", device="cpu", threads=1, model={"hidden_size": 16, "embed_dim": 8,
                                                                       "dropout": 0.2})


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

    # The same command again: process 0 refuses the directory, and process 1 hears of it from process 0 (it went on
    # into the task's build and failed there on the peer's exit, with a raw gloo traceback).
    mp.spawn(_refused_worker, args=(2, _free_port(), run_dir), nprocs=2, join=True)
    errors = [open(os.path.join(run_dir, f"error{rank}.txt")).read() for rank in range(2)]
    assert errors[0].startswith("ValueError: ") and "already holds a training run" in errors[0], errors
    assert errors[1].startswith("ValueError: process 0 stopped: ") and "already holds a training run" in errors[1]


def _interrupted_worker(rank: int, world: int, port: int, run_dir: str, stop: str) -> None:
    """Process 1 is sent SIGTERM at its 7th step (stop "signal"), or process 0's checkpoint write fails (stop
    "save"); what each process raised goes to outcome<rank>.txt."""
    import signal

    from s2s_fast import train as training
    _join(rank, world, port)
    step = training.Trainer._train_step
    calls = []

    def counted_step(self, batch):
        calls.append(1)
        if stop == "signal" and rank == 1 and len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch)

    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def interrupted_save(*args, **kwargs):  # Ctrl-C twice on process 0 while it saves
        raise KeyboardInterrupt

    log_line = training.Logger.__call__

    def failing_dev_line(self, line, echo=True):
        if line.startswith("dev step"):
            raise OSError(28, "No space left on device")
        return log_line(self, line, echo)

    training.Trainer._train_step = counted_step
    if stop == "save":
        training.save_checkpoint = failing_save
    if stop == "interrupted save" and rank == 0:
        training.save_checkpoint = interrupted_save
    if stop == "dev log":
        training.Logger.__call__ = failing_dev_line
    _train_and_write_outcome(run_dir, os.path.join(run_dir, f"outcome{rank}.txt"), lambda: f" after {len(calls)} steps")


def test_a_stop_every_process_agreed_on_ends_them_all_in_step(tmp_path):
    # SIGTERM to one process: both stop after the same step, with one checkpoint of it.
    run_dir = str(tmp_path / "signal")
    mp.spawn(_interrupted_worker, args=(2, _free_port(), run_dir, "signal"), nprocs=2, join=True)
    outcomes = [open(os.path.join(run_dir, f"outcome{rank}.txt")).read() for rank in range(2)]
    assert outcomes == ["TrainingInterrupted: SIGTERM after 7 steps"] * 2, outcomes
    latest = json.load(open(os.path.join(run_dir, "checkpoints", "latest.json")))
    assert latest["step"] == 7 and "SIGTERM at step 7" in open(os.path.join(run_dir, "train.log")).read(), latest
    # Process 0 cannot write its first checkpoint (step 20): process 1 hears why, in one line, and both end there.
    run_dir = str(tmp_path / "save")
    mp.spawn(_interrupted_worker, args=(2, _free_port(), run_dir, "save"), nprocs=2, join=True)
    outcomes = [open(os.path.join(run_dir, f"outcome{rank}.txt")).read() for rank in range(2)]
    assert outcomes == ["OSError: [Errno 28] No space left on device after 20 steps",
                        "ValueError: process 0 stopped: [Errno 28] No space left on device after 20 steps"], outcomes
    # Process 0 interrupted (Ctrl-C twice) while it writes its first checkpoint: process 1 hears of it (it waited in
    # the broadcast until the collective's timeout).
    run_dir = str(tmp_path / "interrupted save")
    mp.spawn(_interrupted_worker, args=(2, _free_port(), run_dir, "interrupted save"), nprocs=2, join=True)
    outcomes = [open(os.path.join(run_dir, f"outcome{rank}.txt")).read() for rank in range(2)]
    assert outcomes == ["KeyboardInterrupt:  after 20 steps",
                        "ValueError: process 0 stopped: KeyboardInterrupt after 20 steps"], outcomes
    # Process 0 cannot write its first dev line: the same (process 1 failed in its next collective, a raw gloo
    # traceback).
    run_dir = str(tmp_path / "dev log")
    mp.spawn(_interrupted_worker, args=(2, _free_port(), run_dir, "dev log"), nprocs=2, join=True)
    outcomes = [open(os.path.join(run_dir, f"outcome{rank}.txt")).read() for rank in range(2)]
    assert outcomes == ["OSError: [Errno 28] No space left on device after 20 steps",
                        "ValueError: process 0 stopped: [Errno 28] No space left on device after 20 steps"], outcomes


def test_a_directory_another_train_holds_is_refused_on_every_process_in_one_line(tmp_path):
    """Process 0 took the lock outside the processes' agreement: process 1 failed in its next collective (a raw
    gloo traceback) while process 0 said the directory was in use."""
    from s2s_fast.files import locked_directory

    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    with locked_directory(run_dir, "s2s-fast train"):
        mp.spawn(_refused_worker, args=(2, _free_port(), run_dir), nprocs=2, join=True)
    errors = [open(os.path.join(run_dir, f"error{rank}.txt")).read() for rank in range(2)]
    assert errors[0].startswith("BlockingIOError: ") and "in use by another s2s-fast train" in errors[0], errors
    assert errors[1].startswith("ValueError: process 0 stopped: ") and "in use by another" in errors[1], errors
