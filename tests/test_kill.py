"""SIGKILL a tiny training run at random points around its saves, again and again, resuming it each time.

After every kill: latest.json and best.json name checkpoints that load and decode; the best on disk is the best the
metrics recorded (or, killed between the two pointer moves, a better one the run has just saved); the trainer state
agrees with the metrics. Each resume must succeed, and the run that was killed 25 times ends with the same weights
as one that never was.

The test runs this file as a script, a driver process that forks every training run and every check: the driver
itself never computes with torch, so each fork starts clean, and a kill costs no interpreter start. The trainer is
s2s_fast.cli.main (the console script's entry point) with SIGKILL armed at a random call among the filesystem
operations of checkpoint.py.
"""

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

KILLS = 25
MAX_STEPS = 40
# Filesystem operations of checkpoint.py a kill may precede or follow: every one a save makes.
EVENTS_PER_SAVE = 40
TRAIN = ["--task", "copy", "--toy-symbols", "4", "--toy-min-len", "1", "--toy-max-len", "3", "--toy-train-size",
         "200", "--toy-eval-size", "20", "--batch-tokens", "64", "--device", "cpu", "--threads", "1", "--progress",
         "off", "--log-every", "100", "--model", "hidden_size=16", "--model", "embed_dim=8", "--lr", "2e-2",
         "--warmup-steps", "2", "--max-steps", str(MAX_STEPS), "--eval-every", "2", "--save-every", "1",
         "--keep-checkpoints", "1"]


def test_sigkill_around_saves_never_loses_a_checkpoint_or_the_best(tmp_path):
    result = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["kills"] >= 20 and report["best_moves_seen"] >= 2, report


def _forked(function, *args) -> int:
    """Run ``function(*args)`` in a child process; its exit code, or -signal when a signal ended it."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = function(*args)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _train_killed_at(run: Path, event: int, resume: bool) -> int:
    """Train (or resume) the run, SIGKILLing this process before or after the ``event``-th filesystem operation of
    checkpoint.py."""
    from s2s_fast import checkpoint
    from s2s_fast.cli import main

    count = [0]

    def tick():
        count[0] += 1
        if count[0] == event:
            os.kill(os.getpid(), signal.SIGKILL)

    def armed(real):
        def call(*args, **kwargs):
            tick()
            result = real(*args, **kwargs)
            tick()
            return result
        return call

    for name in ("fsync_path", "write_json_atomic", "save_model"):
        setattr(checkpoint, name, armed(getattr(checkpoint, name)))
    os.replace, shutil.rmtree, pathlib.Path.rename = armed(os.replace), armed(shutil.rmtree), armed(pathlib.Path.rename)
    return main(["train", "--output-dir", str(run), *(["--resume"] if resume else TRAIN)])


def _check(run: Path) -> int:
    """The invariants after a kill (exit 0), or the first one broken (an AssertionError, exit 1)."""
    import torch

    from s2s_fast import checkpoint
    from s2s_fast.cli import main

    torch.set_num_threads(1)
    root = run / "checkpoints"
    if not (root / "latest.json").exists():
        assert not any(root.glob("step-*")) if root.exists() else True, "checkpoints but no latest.json"
        return 0
    latest = json.loads((root / "latest.json").read_text())
    state = checkpoint.load_trainer_state(root / latest["checkpoint"])
    assert state["step"] == latest["step"]
    dev = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "dev":
            assert dev.get(event["step"], event["accuracy"]) == event["accuracy"], "a redone evaluation differs"
            dev[event["step"]] = event["accuracy"]
    recorded = None
    for step in sorted(step for step in dev if step <= state["step"]):
        if recorded is None or dev[step] > recorded["value"]:
            recorded = {"step": step, "value": dev[step]}
    assert (state["best"] and {k: state["best"][k] for k in ("step", "value")}) == recorded, (state["best"], recorded)
    if recorded is not None:
        assert (root / checkpoint.checkpoint_name(recorded["step"]) / "model.safetensors").is_file()
    if (root / "best.json").exists():
        best = json.loads((root / "best.json").read_text())
        assert best["value"] == dev[best["step"]]
        # Killed between the two pointer moves, best.json names the better checkpoint the run has just saved.
        just_saved = best["step"] > state["step"] and (recorded is None or best["value"] > recorded["value"])
        assert just_saved or best["step"] == recorded["step"], (best, recorded)
    else:
        assert recorded is None, "the run recorded a best but best.json is gone"
    inputs = run.parent / "inputs.txt"
    inputs.write_text("1 2 3\n0\n")
    for which in ("best", "last"):
        assert main(["decode", str(run), "--checkpoint", which, "--input", str(inputs), "--beam-size", "2",
                     "--device", "cpu"]) == 0
    return 0


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "checkpoints" / json.loads((run / "checkpoints" / "latest.json").read_text())[
        "checkpoint"] / "model.safetensors")


def _same_weights(a: Path, b: Path) -> int:
    import torch

    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    return 0


def drive(directory: Path) -> None:
    # Imported once here, so that no fork pays for it; nothing here runs a torch op, so every fork starts clean.
    import s2s_fast.cli  # noqa: F401
    import safetensors.torch  # noqa: F401

    rng = random.Random(1234)
    run, straight = directory / "killed", directory / "straight"
    kills, best_moves = 0, set()
    while kills < KILLS:
        code = _forked(_train_killed_at, run, rng.randint(1, 3 * EVENTS_PER_SAVE), (run / "checkpoints").exists())
        assert code in (-signal.SIGKILL, 0), f"training exited with {code} after {kills} kills"
        if code == 0:
            shutil.rmtree(run)  # the run finished before the kill: start again, the kills so far stand
            continue
        kills += 1
        assert _forked(_check, run) == 0, f"invariant broken after kill {kills}"
        if (run / "checkpoints" / "best.json").exists():
            best_moves.add(json.loads((run / "checkpoints" / "best.json").read_text())["step"])
    assert _forked(_train_killed_at, run, 0, True) == 0, "the final resume failed"
    assert _forked(_check, run) == 0
    assert _forked(_train_killed_at, straight, 0, False) == 0
    assert _forked(_same_weights, run, straight) == 0, "the killed run ended with other weights"
    print(json.dumps({"kills": kills, "best_moves_seen": len(best_moves)}))


if __name__ == "__main__":
    drive(Path(sys.argv[1]))
