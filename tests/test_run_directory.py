"""What a training run keeps on disk survives: one run per output directory, pointers no kill can leave wrong,
a full disk, a reader racing the run that prunes, damaged files named, and a directory never silently reused.

CLI cases call s2s_fast.cli.main(argv) in this process (the console script's entry point) unless a second process
is the point of the test.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s2s_fast import checkpoint as ckpt
from s2s_fast.cli import main
from s2s_fast.files import LOCK_FILE, temporary_path, write_json_atomic
from s2s_fast.train import train
from s2s_fast.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(echo=lambda line: None)
TINY = dict(task="reverse", toy_train_size=300, toy_eval_size=40, toy_max_len=8, batch_tokens=160, warmup_steps=3,
            log_every=4, progress="off", device="cpu", threads=1, model={"hidden_size": 16, "embed_dim": 8})
TINY_FLAGS = ["--task", "reverse", "--toy-train-size", "300", "--toy-eval-size", "40", "--toy-max-len", "8",
              "--batch-tokens", "160", "--warmup-steps", "3", "--device", "cpu", "--threads", "1", "--progress",
              "off", "--model", "hidden_size=16", "--model", "embed_dim=8"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _pointer(run, name):
    return json.loads((run / "checkpoints" / name).read_text())


def _one_line_error(code, err, pattern):
    import re

    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err


def test_a_second_run_in_the_directory_is_refused_naming_the_holder(tmp_path, capsys):
    """Another process (here a plain holder of the lock) trains in the directory: train and train --resume are
    refused with its pid, and go ahead once it has ended."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom s2s_fast.files import locked_directory\n"
                               f"with locked_directory({str(run)!r}, 's2s-fast train'):\n"
                               "    print('held', flush=True)\n    time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            code, _, err = _run(capsys, "train", "--output-dir", run, "--max-steps", 2, *TINY_FLAGS, *extra)
            _one_line_error(code, err, rf"{run} is in use by another s2s-fast train \(pid {holder.pid}\)")
    finally:
        holder.kill()
        holder.wait()
    assert not (run / "checkpoints").exists()
    code, out, _ = _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 0, *TINY_FLAGS)
    assert code == 0 and "done: step 2" in out
    assert (run / LOCK_FILE).read_text() == ""


def test_temporary_names_belong_to_one_process(tmp_path):
    path = tmp_path / "latest.json"
    assert temporary_path(path).name == f".latest.json.{__import__('os').getpid()}.tmp"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["latest.json"]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in s2s_fast catches it."""


def test_a_kill_after_the_best_pointer_moves_loses_nothing_and_resume_repairs(tmp_path, monkeypatch):
    """Step 2 is the run's first dev evaluation, so its best; the process dies right after best.json names step 2
    and before latest.json does. Both pointers name complete checkpoints; resume (from step 1, where the run had no
    best yet) puts best.json back in line with that state, and the finished run agrees with its metrics."""
    run = tmp_path / "run"
    config = dict(TINY, output_dir=str(run), eval_every=2, save_every=1, keep_checkpoints=1)
    real_write = ckpt.write_json_atomic

    def dies_before_latest_moves_to_step_2(path, value):
        if Path(path).name == ckpt.LATEST and value["step"] == 2:
            raise Killed
        real_write(path, value)

    monkeypatch.setattr(ckpt, "write_json_atomic", dies_before_latest_moves_to_step_2)
    with pytest.raises(Killed):
        train(TrainConfig(max_steps=6, **config), **QUIET)
    monkeypatch.undo()
    assert _pointer(run, "best.json")["checkpoint"] == "step-00000002"
    assert _pointer(run, "latest.json")["checkpoint"] == "step-00000001"
    for which in ("best", "last"):
        ckpt.load_checkpoint(ckpt.find_checkpoint(run, which))

    result = train(TrainConfig(max_steps=6, **config), resume=True, explicit={"max_steps": 6}, **QUIET)
    log = (run / "train.log").read_text()
    assert "note: best.json no longer names step-00000002, which this run has not reached" in log
    dev = [event for event in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if event["kind"] == "dev"]
    best = max(dev, key=lambda event: (event["accuracy"], -event["step"]))
    assert result.best["step"] == best["step"] and _pointer(run, "best.json")["step"] == best["step"]
    assert _pointer(run, "best.json")["value"] == best["accuracy"]


def test_resume_points_best_json_at_the_best_the_trainer_state_records(tmp_path):
    """Pointers left wrong by an older s2s_fast (best.json naming an earlier checkpoint than the state's best, the
    state's best pruned) are rewritten from the trainer state, with a note; latest.json too."""
    run = tmp_path / "run"
    config = dict(TINY, output_dir=str(run), eval_every=2, save_every=1, keep_checkpoints=10)
    result = train(TrainConfig(max_steps=4, **config), **QUIET)
    assert result.best["step"] == 2
    write_json_atomic(run / "checkpoints" / "best.json", {**_pointer(run, "best.json"), "checkpoint": "step-00000001",
                                                          "step": 1})
    (run / "checkpoints" / "latest.json").unlink()
    train(TrainConfig(max_steps=5, **config), resume=True, explicit={"max_steps": 5}, **QUIET)
    log = (run / "train.log").read_text()
    assert "resumed from" in log and "step-00000004" in log
    assert "note: latest.json now names step-00000004" in log
    assert "note: best.json now names step-00000002, the best the run recorded" in log
    assert _pointer(run, "best.json")["checkpoint"] == "step-00000002"

    shutil.rmtree(run / "checkpoints" / "step-00000002")
    train(TrainConfig(max_steps=6, **config), resume=True, explicit={"max_steps": 6}, **QUIET)
    assert "the best checkpoint the run recorded, step-00000002, is gone" in (run / "train.log").read_text()
    assert not (run / "checkpoints" / "best.json").exists()


def test_a_directory_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    """latest.json gone, best.json and checkpoints left: a fresh train is refused (it would leave decode serving
    the old best), --resume continues from the newest checkpoint, --overwrite starts over with nothing left of
    the old run; --resume with --overwrite is refused."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 4, "--eval-every", 2, *TINY_FLAGS)[0] == 0
    (run / "checkpoints" / "latest.json").unlink()
    code, _, err = _run(capsys, "train", "--output-dir", run, "--max-steps", 4, *TINY_FLAGS)
    _one_line_error(code, err, r"already holds a training run \(config.json, train.log, metrics.jsonl, checkpoints\);"
                               r" pass --resume to continue it, --overwrite to replace it")
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--overwrite")
    _one_line_error(code, err, "--resume continues .* --overwrite replaces it: give one of them")
    code, out, _ = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 6)
    assert code == 0 and "resumed from" in out and "step-00000004" in out and "done: step 6" in out
    assert _pointer(run, "latest.json")["step"] == 6

    code, out, _ = _run(capsys, "train", "--output-dir", run, "--overwrite", "--max-steps", 1, "--eval-every", 0,
                        "--seed", 3, *TINY_FLAGS)
    assert code == 0 and "done: step 1" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.json", "step-00000001"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert sorted(p.name for p in run.iterdir() if p.name != LOCK_FILE) == [
        "checkpoints", "config.json", "metrics.jsonl", "train.log", "vocab"]


@pytest.mark.parametrize("bad", [["--model", "cell=lstn"], ["--task", "parallel"]])
def test_overwrite_leaves_the_old_run_whole_when_the_new_one_cannot_start(tmp_path, capsys, bad):
    """--overwrite with a setting refused only once the new run is being built (a model field's value, the data):
    the error, and the old run as it was, vocabularies included."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 2, *TINY_FLAGS)[0] == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    code, _, err = _run(capsys, "train", "--output-dir", run, "--overwrite", "--max-steps", 2, *TINY_FLAGS, *bad)
    assert code == 1 and "Traceback" not in err, err
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert after == before


@pytest.mark.parametrize("flag,value", [("--toy-eval-size", 10), ("--toy-seed", 4)])
def test_resume_refuses_changed_data_settings_instead_of_recording_them(tmp_path, capsys, flag, value):
    """The resumed task is the one saved with the run: a new dev set would be written to config.json and not used,
    so it is refused (as are the other settings of the data)."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 2, *TINY_FLAGS)[0] == 0
    saved = (run / "config.json").read_text()
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 4, flag, value)
    _one_line_error(code, err, rf"cannot change {flag[2:].replace('-', '_')} of an existing run")
    assert (run / "config.json").read_text() == saved


def test_every_setting_the_task_reads_is_fixed_on_resume():
    import dataclasses

    from s2s_fast.train_config import FIXED_ON_RESUME

    task_options = {spec.name for spec in dataclasses.fields(TrainConfig) if spec.metadata["task_option"]}
    assert {"dev_src", "dev_tgt", "test_src", "test_tgt", "toy_eval_size"} <= task_options <= set(FIXED_ON_RESUME)


@pytest.mark.parametrize("failure", ["torch.save", "safetensors"])
def test_a_full_disk_cleans_up_says_no_space_left_and_resume_works(tmp_path, capsys, monkeypatch, failure):
    """Writing a checkpoint fails as a full disk makes it fail (Python's OSError(ENOSPC) for the trainer state,
    safetensors' own error for the weights): one line that says so, no temporary left, the last good checkpoint
    kept, and --resume continues once there is room."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 0, *TINY_FLAGS)[0] == 0
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):
        if failure == "torch.save":
            raise OSError(28, "No space left on device")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    if failure == "safetensors":
        monkeypatch.setattr(ckpt, "save_model", disk_full)
    else:
        real_save = torch.save

        def partial_then_full(obj, file, *args, **kwargs):
            real_save(obj, file, *args, **kwargs)
            disk_full()

        monkeypatch.setattr(ckpt.torch, "save", partial_then_full)
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 4)
    monkeypatch.undo()
    _one_line_error(code, err, r"no space left on device while writing checkpoint step-00000003; the last good "
                               r"checkpoint stays")
    root = run / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step-00000002"]
    code, out, _ = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 4)
    assert code == 0 and "done: step 4" in out and _pointer(run, "latest.json")["step"] == 4


def test_a_reader_follows_a_checkpoint_the_training_run_prunes_while_it_loads(tmp_path, monkeypatch):
    """The race decode lost against a training run: latest.json names step 2, the run saves step 3 and prunes step 2
    while the reader is between two of its files. The reader loads step 3 instead of failing."""
    run = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, save_every=1, **TINY), **QUIET)
    real_load_task = ckpt.load_task

    def training_saves_and_prunes_meanwhile(directory):
        if Path(directory).name == "step-00000002":
            state = ckpt.load_trainer_state(directory)
            ckpt.save_checkpoint(run, 3, result.model, real_load_task(directory), {}, {**state, "step": 3})
        return real_load_task(directory)

    monkeypatch.setattr(ckpt, "load_task", training_saves_and_prunes_meanwhile)
    checkpoint, model, task, _ = ckpt.open_checkpoint(run, "last")
    assert checkpoint.name == "step-00000003" and not (run / "checkpoints" / "step-00000002").exists()
    monkeypatch.undo()

    real_load_model = ckpt.load_model

    def pruned_while_safetensors_maps_the_weights(model, filename, *args, **kwargs):
        """As seen in a real race: safetensors read the header, then torch could not map the pruned file."""
        if Path(filename).parent.name == "step-00000003":
            state = ckpt.load_trainer_state(Path(filename).parent)
            ckpt.save_checkpoint(run, 4, result.model, real_load_task(Path(filename).parent), {},
                                 {**state, "step": 4})
            raise RuntimeError(f"unable to open file <{filename}> in read-only mode: No such file or directory (2)")
        return real_load_model(model, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "load_model", pruned_while_safetensors_maps_the_weights)
    assert ckpt.open_checkpoint(run, "last")[0].name == "step-00000004"


def _flatten_like_cudnn(rnn: torch.nn.RNNBase) -> None:
    """What torch.nn.RNNBase.flatten_parameters does on a GPU: every weight a view into one buffer."""
    weights = rnn._flat_weights
    flat = torch.cat([w.detach().reshape(-1) for w in weights])
    offset = 0
    with torch.no_grad():
        for weight in weights:
            weight.set_(flat.untyped_storage(), offset, weight.shape, weight.stride())
            offset += weight.numel()


def test_a_model_with_weights_in_one_buffer_saves_and_reloads_with_ties_kept(tmp_path):
    """The first GPU run (2026-12-04) could not checkpoint: on a GPU the encoder's weights are views into cuDNN's one
    buffer, and safetensors refuses views that do not cover their storage. Emulated here by flattening them so; the
    tied target embedding and output projection stay tied through the file."""
    run = tmp_path / "run"
    config = TrainConfig(output_dir=str(run), max_steps=1, eval_every=0,
                         **{**TINY, "model": {"hidden_size": 16, "embed_dim": 16, "tie_embeddings": True}})
    result = train(config, **QUIET)
    _flatten_like_cudnn(result.model.encoder)
    with torch.no_grad():
        result.model.encoder.weight_hh_l0.add_(1.0)  # a value the file must carry, written through the view
    assert result.model.encoder.weight_ih_l0.untyped_storage().nbytes() > result.model.encoder.weight_ih_l0.nbytes
    state = ckpt.load_trainer_state(run / "checkpoints" / "step-00000001")
    saved = ckpt.save_checkpoint(run, 2, result.model, ckpt.load_task(run / "checkpoints" / "step-00000001"), {},
                                 {**state, "step": 2})
    model, _, _ = ckpt.load_checkpoint(saved)
    expected = result.model.state_dict()
    assert model.state_dict().keys() == expected.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert model.output.weight is model.tgt_embed.weight


def test_decoding_while_a_run_trains_and_prunes_never_fails(tmp_path, capsys):
    """A real run saves (and prunes) after every step in another process while this one decodes its latest
    checkpoint over and over."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 1, "--eval-every", 0, *TINY_FLAGS)[0] == 0
    log = tmp_path / "trainer.log"  # a file, not a pipe nobody reads while it runs (a full pipe would stall it)
    with log.open("w") as trainer_err:
        trainer = subprocess.Popen([sys.executable, "-m", "s2s_fast", "train", "--output-dir", str(run), "--resume",
                                    "--max-steps", "10000", "--save-every", "1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=trainer_err)
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2 3\n")
    loads, started = set(), time.monotonic()
    try:
        while _pointer(run, "latest.json")["step"] == 1 and time.monotonic() < started + 30:
            time.sleep(0.05)
        # Until the decodes have met six checkpoints (each a new latest, the one before pruned): not a fixed time,
        # which a slow or busy machine (two cores shared by both processes) may spend on fewer.
        while trainer.poll() is None and len(loads) <= 5 and time.monotonic() < started + 90:
            code, out, err = _run(capsys, "decode", run, "--checkpoint", "last", "--input", inputs, "--beam-size", 1,
                                  "--device", "cpu")
            assert code == 0, err
            loads.add(_pointer(run, "latest.json")["step"])
    finally:
        trainer.kill()
        trainer.wait()
    assert len(loads) > 5, f"decoded {len(loads)} checkpoints; trainer: {trainer.returncode} {log.read_text()[-2000:]}"


DAMAGE = {
    "truncated weights": ("model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:100]),
                          r"model.safetensors: damaged, or not the weights model_config.json describes"),
    "garbage weights": ("model.safetensors", lambda path: path.write_bytes(b"garbage\n"),
                        r"model.safetensors: damaged"),
    "model config not JSON": ("model_config.json", lambda path: path.write_text("{"),
                              r"model_config.json: damaged, not JSON"),
    "model config missing fields": ("model_config.json", lambda path: path.write_text('{"embed_dim": 8}'),
                                    r"model_config.json: damaged model configuration"),
    "task file missing keys": ("task.json", lambda path: path.write_text('{"task": "reverse"}'),
                               r"task.json: damaged task file \(missing src_vocab, tgt_vocab, options\)"),
    "weights NaN": ("model.safetensors", None, r"model.safetensors: the weights hold NaN or infinity"),
    "task options missing": ("task.json", lambda path: path.write_text(json.dumps(
        {**json.loads(path.read_text()), "options": {}})), r"task.json: damaged task file \(options missing: "),
    "vocabulary cut short": ("task.json", lambda path: path.write_text(json.dumps(
        {**(task := json.loads(path.read_text())), "tgt_vocab": task["tgt_vocab"][:6]})),
        r": damaged, its task's vocabularies \(\d+ / 6 symbols\) are not the model's"),
    "model config not a mapping": ("model_config.json", lambda path: path.write_text("[]"),
                                   r"model_config.json: damaged model configuration \(not a mapping of settings\)"),
    "vocabulary not a list": ("task.json", lambda path: path.write_text(json.dumps(
        {**json.loads(path.read_text()), "src_vocab": 5})), r"task.json: damaged task file \(Vocabulary: not a list"),
    "vocabulary with a token twice": ("task.json", lambda path: path.write_text(json.dumps(
        {**(task := json.loads(path.read_text())), "src_vocab": task["src_vocab"] + task["src_vocab"][-1:]})),
        r"task.json: damaged task file \(Vocabulary: tokens must be unique\)"),
    "training configuration not a mapping": ("train_config.json", lambda path: path.write_text("[1]\n"),
                                             r"train_config.json: damaged training configuration"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_file_is_named_in_one_line(tmp_path, capsys, damage):
    run = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, **TINY), **QUIET)
    checkpoint = ckpt.find_checkpoint(run, "last")
    name, spoil, message = DAMAGE[damage]
    if spoil is None:
        from safetensors.torch import save_model

        with torch.no_grad():
            next(result.model.parameters()).fill_(float("nan"))
        save_model(result.model, str(checkpoint / name))
    else:
        spoil(checkpoint / name)
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2\n")
    for argv in (["decode", run, "--input", inputs, "--device", "cpu"], ["evaluate", run, "--device", "cpu"],
                 ["train", "--output-dir", run, "--resume", "--max-steps", 3]):
        _one_line_error(*_run(capsys, *argv)[::2], rf"{checkpoint}/?{message}")


@pytest.mark.parametrize("content", ["{\"checkpoint\": \"step-0", "{\"x\": 1}", "[]", "{\"checkpoint\": \"../x\"}"])
def test_a_damaged_pointer_file_is_named_in_one_line(tmp_path, capsys, content):
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=2, **TINY), **QUIET)
    for name, argv in (("best.json", ["evaluate", run, "--device", "cpu"]),
                       ("latest.json", ["train", "--output-dir", run, "--resume", "--max-steps", 3])):
        (run / "checkpoints" / name).write_text(content)
        _one_line_error(*_run(capsys, *argv)[::2], rf"{run / 'checkpoints' / name}: damaged")


def test_a_damaged_trainer_state_is_named_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, **TINY), **QUIET)
    state = ckpt.find_checkpoint(run, "last") / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:50])
    _one_line_error(*_run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)[::2],
                    rf"{state}: damaged")
    torch.save({"step": 2}, state)
    _one_line_error(*_run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)[::2],
                    rf"{state}: not a trainer state \(missing epoch, ")
    state.write_text("hello")  # torch's weights-only unpickler raised KeyError: 101
    _one_line_error(*_run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)[::2],
                    rf"{state}: damaged \(")


def test_a_trainer_state_with_fields_a_resume_cannot_read_is_named_in_one_line(tmp_path, capsys):
    """Hand-edited, or written by something else: each failed later with a traceback (TypeError, KeyError,
    IndexError)."""
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, **TINY), **QUIET)
    path = ckpt.find_checkpoint(run, "last") / "trainer_state.pt"
    good = torch.load(path, weights_only=True)
    for change, message in (({"step": "2"}, r"step is '2', not a count"),
                            ({"optimizer": {}}, r"optimizer is not an optimizer's state"),
                            ({"optimizer": {"state": {}, "param_groups": []}}, r"its optimizer or scheduler state "
                                                                              r"does not fit the model \("),
                            ({"best": {"value": 0.5}}, r"best is \{'value': 0.5\}, not a dev score"),
                            ({"rng": []}, r"rng is not one generator state per process \(1\)"),
                            ({"rng": [{"torch": torch.zeros(3, dtype=torch.uint8)}]},
                             r"its random generator state is not torch's"),
                            ({"world_size": 0}, r"world_size is 0, not a number of processes"),
                            ({"evaluated_step": "2"}, r"evaluated_step is '2', not a step up to 2"),
                            ({"evaluated_step": 3}, r"evaluated_step is 3, not a step up to 2")):
        torch.save({**good, **change}, path)
        _one_line_error(*_run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)[::2],
                        rf"{path}: damaged trainer state[ ,] ?\(?{message}")
    torch.save(good, path)
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)[0] == 0


def test_a_trainer_state_this_machine_cannot_read_is_not_called_damaged(tmp_path, capsys, monkeypatch):
    """A file unreadable here, or a machine short of memory, says so: "damaged" would invite deleting a good
    checkpoint."""
    run = tmp_path / "run"
    train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, **TINY), **QUIET)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt.torch, "load", denied)
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3)
    assert code == 1 and "Permission denied" in err and "damaged" not in err, err
    monkeypatch.undo()

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(torch.optim.AdamW, "load_state_dict", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        main(["train", "--output-dir", str(run), "--resume", "--max-steps", "3"])


def test_a_checkpoint_deleted_by_hand_is_stepped_over_or_named(tmp_path, capsys):
    """The newest checkpoint deleted (latest.json naming it): --checkpoint last and --resume take the newest one left,
    and the resumed run says latest.json moved. The best one deleted: --checkpoint best names best.json and what to
    do, in one line."""
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 4, "--eval-every", 2, "--save-every", 1,
                "--keep-checkpoints", 3, *TINY_FLAGS)[0] == 0
    root = run / "checkpoints"
    assert _pointer(run, "latest.json")["checkpoint"] == "step-00000004"
    shutil.rmtree(root / "step-00000004")
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2\n")
    output = tmp_path / "out.txt"
    code, _, err = _run(capsys, "decode", run, "--checkpoint", "last", "--input", inputs, "--output", output,
                        "--device", "cpu")
    assert code == 0, err
    assert Path(json.loads(Path(f"{output}.config.json").read_text())["checkpoint"]).name == "step-00000003"
    code, out, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 5)
    assert code == 0 and "step-00000003" in out and "latest.json now names step-00000003" in out + err, out + err
    best = _pointer(run, "best.json")["checkpoint"]
    shutil.rmtree(root / best)
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--device", "cpu")
    _one_line_error(code, err, rf"best.json names {best}, which is not on disk \(deleted\?\): pass --checkpoint last")


def test_a_start_that_failed_before_its_first_step_does_not_block_the_corrected_command(tmp_path, capsys):
    """Only config.json and train.log (a run refused while it was built, e.g. with fewer batches than processes):
    the next train there starts, rewriting config.json and going on with train.log; with metrics.jsonl or a
    checkpoint beside them it would be a run, refused as before."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}\n")
    (run / "train.log").write_text("error: the failed start\n")
    code, out, err = _run(capsys, "train", "--output-dir", run, "--max-steps", 1, "--eval-every", 0, *TINY_FLAGS)
    assert code == 0 and "done: step 1" in out, err
    assert (run / "train.log").read_text().startswith("error: the failed start\n")
    assert json.loads((run / "config.json").read_text())["max_steps"] == 1
    (run / "metrics.jsonl").unlink()
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").write_text("")
    code, _, err = _run(capsys, "train", "--output-dir", run, "--max-steps", 1, *TINY_FLAGS)
    _one_line_error(code, err, r"already holds a training run \(config.json, train.log, metrics.jsonl\)")


def test_resume_checks_the_flags_against_the_runs_own_settings_and_its_model(tmp_path, capsys):
    """A resumed run's flags were checked against the defaults before its saved settings completed them (its own
    --toy-min-len 20 against the default --toy-max-len 12), and a --model restating the run's own value was taken
    for a change of model."""
    run = tmp_path / "run"
    flags = [*TINY_FLAGS[:6], "--toy-max-len", "30", *TINY_FLAGS[8:]]
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 2, "--toy-min-len", 20,
                *flags)[0] == 0
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3, "--toy-min-len", 20)[0] == 0
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 4, "--model", "dropout=0.0",
                "--model", "hidden-size=16")[0] == 0
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 5, "--model",
                        "hidden_size=32")
    _one_line_error(code, err, "cannot change model of an existing run")


@pytest.mark.parametrize("flags, pattern", [
    (["--task", "g2p", "--toy-symbols", "5"], "toy_symbols is read by the toy tasks, not by g2p"),
    (["--task", "reverse", "--train-src", "x.de"], "train_src is read by the parallel task, not by reverse"),
    (["--task", "reverse", "--eval-every", "0", "--patience", "2"],
     r"patience \(2\) counts dev evaluations .* makes none \(--eval-every 0\)"),
    (["--task", "parallel", "--train-src", "a", "--train-tgt", "b", "--patience", "2"],
     r"makes none \(no --dev-src/--dev-tgt\)"),
    (["--task", "reverse", "--seed", "99999999999999999999999"], r"seed must be an integer in \(-2\*\*62, 2\*\*62\)"),
    (["--task", "reverse", "--lr-schedule", "constant", "--min-lr-ratio", "0.5"],
     r"min_lr_ratio \(0.5\) is read by the cosine and linear schedules only, not by lr_schedule 'constant'"),
    (["--task", "reverse", "--lr-schedule", "inverse_sqrt", "--decay-steps", "50"],
     r"decay_steps \(50\) is read by the cosine and linear schedules only"),
    (["--task", "reverse", "--sampling-warmup-steps", "100"],
     r"sampling_warmup_steps \(100\) ramps up scheduled sampling, and sampling_rate is 0"),
    (["--task", "reverse", "--eval-every", "0", "--eval-beam-size", "5"],
     r"eval_beam_size \(5\) is read by dev evaluations, and this run makes none \(--eval-every 0\)"),
    (["--task", "reverse", "--eval-every", "0", "--eval-max-examples", "3"], r"eval_max_examples \(3\) is read by dev"),
    (["--task", "parallel", "--train-src", "a", "--train-tgt", "b", "--src-spm", "m", "--tgt-spm", "m",
      "--spm-model-type", "bpe"], r"spm_model_type \('bpe'\) is read when a sentencepiece model is trained, and "
                                  "--src-spm and --tgt-spm both give one"),
    (["--task", "reverse", "--model", "attention=luong-dot", "--model", "attention_size=16"],
     "attention_size sizes Bahdanau's .* 'luong-dot' has no such size"),
])
def test_settings_the_run_would_not_read_are_refused_before_anything_is_written(tmp_path, capsys, flags, pattern):
    """Another task's settings were recorded in config.json, unused (and then fixed on resume); patience without dev
    evaluations never stopped anything; a seed past torch's 64 bits failed after the task was built."""
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--output-dir", run, "--max-steps", 2, *flags)
    _one_line_error(code, err, pattern)
    assert not run.exists() or not any(run.iterdir())


def test_a_config_file_naming_a_setting_twice_is_refused(tmp_path, capsys):
    """max_steps: 3 and max-steps: 7 in one file ran 7 steps, silently."""
    for text, pattern in (("max_steps: 3\nmax-steps: 7\n", r"max_steps is given twice \(as 'max_steps' and "
                                                           r"'max-steps'\)"),
                          ("model:\n  hidden_size: 32\n  hidden-size: 64\n", "model: hidden_size is given twice")):
        config = tmp_path / "config.yaml"
        config.write_text(text)
        code, _, err = _run(capsys, "train", "--config", config, "--output-dir", tmp_path / "run")
        _one_line_error(code, err, pattern)


def test_a_run_that_recorded_settings_it_did_not_read_still_resumes(tmp_path, capsys):
    """Before they were refused, another task's settings, a patience without dev evaluations and an attention_size
    of a Luong attention were recorded (unread), the first fixed on resume: such a run resumes, and restates its
    model, those settings dropped."""
    from s2s_fast.checkpoint import TRAIN_CONFIG

    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 0, *TINY_FLAGS,
                "--model", "attention=luong-general")[0] == 0
    saved = ckpt.find_checkpoint(run, "last") / TRAIN_CONFIG
    values = json.loads(saved.read_text())
    write_json_atomic(saved, {**values, "train_src": "/nonexistent/train.de", "patience": 3, "eval_beam_size": 4,
                              "model": {**values["model"], "attention_size": 16}})
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3, "--model", "dropout=0.0")[0] == 0
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["train_src"] is None and resumed["patience"] == 0 and "attention_size" not in resumed["model"]
    assert resumed["eval_beam_size"] == 1


def test_a_resume_records_what_it_ran_and_marks_where_it_took_over(tmp_path, capsys):
    """A resume with another --lr logged the checkpoint's rate for its first step; a null in a config file replaced
    the run's value and crashed (lr) or stopped dev evaluation (eval_every); a resume with nothing to do rewrote
    config.json with settings that never ran; the events of an abandoned run's steps past its last checkpoint read
    as this run's; a copy of a checkpoint set aside (step-00000002-keep) was pruned."""
    from s2s_fast.train import lr_factor

    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 2, *TINY_FLAGS)[0] == 0
    shutil.copytree(run / "checkpoints" / "step-00000002", run / "checkpoints" / "step-00000002-keep")
    before = (run / "config.json").read_text()
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 1, "--lr", 0.5)[0] == 0
    assert (run / "config.json").read_text() == before
    config = tmp_path / "more.yaml"
    config.write_text("eval_every: null\nsave_every: null\n")
    code, out, err = _run(capsys, "train", "--config", config, "--output-dir", run, "--resume", "--max-steps", 4,
                          "--lr", 0.1, "--log-every", 1, "--keep-checkpoints", 1)
    assert code == 0, err
    resumed = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert (resumed.lr, resumed.eval_every, resumed.save_every) == (0.1, 250, 250)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    marks = [n for n, event in enumerate(events) if event == {"kind": "resume", "step": 2,
                                                               "checkpoint": "step-00000002"}]
    assert len(marks) == 2  # the resume with nothing to do, then the one that trained
    steps = [(event["step"], event["lr"]) for event in events[marks[-1]:] if event["kind"] == "train"]
    assert steps == [(step, pytest.approx(0.1 * lr_factor(step - 1, resumed))) for step in (3, 4)]
    assert (run / "checkpoints" / "step-00000002-keep").is_dir()
    (run / "checkpoints" / "latest.json").unlink()  # the newest by step, the copy set aside not among them
    (run / "checkpoints" / "step-notes").mkdir()
    assert ckpt.latest_checkpoint(run / "checkpoints").name == "step-00000004"


def test_a_resume_resets_the_runs_settings_its_new_flags_leave_unread_and_refuses_the_users(tmp_path, capsys):
    """--eval-every 0 on resume was refused for the run's own eval_beam_size (a setting the user never typed); a
    null for a fixed setting the run took by default read as a change of it."""
    run = tmp_path / "run"
    flags = [flag for flag in TINY_FLAGS if flag not in ("--batch-tokens", "160")]
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 2, "--eval-beam-size", 2,
                *flags)[0] == 0
    config = tmp_path / "more.yaml"
    config.write_text("batch_tokens: null\n")
    code, _, err = _run(capsys, "train", "--config", config, "--output-dir", run, "--resume", "--max-steps", 3,
                        "--eval-every", 0)
    assert code == 0, err
    resumed = json.loads((run / "config.json").read_text())
    assert (resumed["eval_every"], resumed["eval_beam_size"], resumed["batch_tokens"]) == (0, 1, 640)
    code, _, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 4, "--eval-every", 0,
                        "--eval-beam-size", 3)
    _one_line_error(code, err, r"eval_beam_size \(3\) is read by dev evaluations")


def test_the_python_api_resumes_a_run_given_its_configuration(tmp_path):
    """train(config, resume=True) without ``explicit`` took every field for given, the task defaults' Nones too,
    and refused to change batch_tokens."""
    first = train(TrainConfig(**{**TINY, "batch_tokens": None}, output_dir=str(tmp_path / "run"), max_steps=2),
                  **QUIET)
    resumed = train(TrainConfig(**{**TINY, "batch_tokens": None}, output_dir=str(tmp_path / "run"), max_steps=3),
                    resume=True, **QUIET)
    assert (first.step, resumed.step) == (2, 3)


def test_the_best_before_an_off_grid_last_evaluation_is_kept_for_a_longer_resume(tmp_path, capsys):
    """The last step's dev evaluation (off the --eval-every grid) moved best.json to it, and pruning deleted the best
    before it, to which a resumed longer run returns: that run then had a best with no weights, and even a resume
    with nothing to do rolled the best back and deleted best.json. (The last step's save is made here by hand: step
    6 scored best at an off-grid evaluation, step 2 the best before it.)"""
    run = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(run), max_steps=4, eval_every=0, save_every=2, keep_checkpoints=2,
                               **TINY), **QUIET)
    state = ckpt.load_trainer_state(run / "checkpoints" / "step-00000004")
    earlier = {"step": 2, "value": 0.5, "metrics": {"accuracy": 0.5, "token_error": 0.2}}
    last = {"step": 6, "value": 0.75, "metrics": {"accuracy": 0.75, "token_error": 0.1}}
    config = ckpt.read_train_config(run / "checkpoints" / "step-00000004")
    ckpt.save_checkpoint(run, 6, result.model, ckpt.load_task(run / "checkpoints" / "step-00000004"),
                         {**config, "max_steps": 6}, {**state, "step": 6, "best": last, "evals_since_best": 0,
                                                      "before_last_eval": (earlier, 1)}, keep_last=1)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000006"]
    # Nothing to do: the run stays as it ended.
    code, out, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 6)
    assert code == 0 and "counts neither" not in out and "best dev accuracy 0.7500 at step 6" in out, (out, err)
    assert _pointer(run, "best.json")["step"] == 6
    # Trained on: back to the best before that evaluation, whose weights are there.
    code, out, err = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 7, "--eval-every", 0)
    assert code == 0 and "counts neither" in out and "is gone" not in out, (out, err)
    assert _pointer(run, "best.json")["step"] == 2
