"""Training: schedules, scheduled sampling, exact resume, atomic checkpoints, best-on-dev, early stopping, a loss
that stops being finite, and SIGINT / SIGTERM."""

import dataclasses
import json

import pytest
import torch

from s2s_fast import checkpoint as ckpt
from s2s_fast.data import BOS_ID, EOS_ID, PAD_ID, collate, make_pairs, toy_vocab_size
from s2s_fast.models import Seq2Seq, Seq2SeqConfig
from s2s_fast.train import lr_factor, train
from s2s_fast.train_config import TrainConfig

QUIET = dict(echo=lambda line: None)
TINY = dict(task="reverse", toy_train_size=300, toy_eval_size=40, toy_max_len=8, batch_tokens=160, warmup_steps=3,
            log_every=4, progress="off", device="cpu", threads=1, model={"hidden_size": 16, "embed_dim": 8})


def _events(run, kind):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == kind]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "inverse_sqrt", "constant"])
def test_lr_schedule_warms_up_then_decays(schedule):
    config = TrainConfig(output_dir="x", max_steps=100, warmup_steps=10, lr_schedule=schedule, min_lr_ratio=0.1)
    factors = [lr_factor(step, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:9], factors[1:10]))
    tail = factors[10:]
    assert all(b <= a for a, b in zip(tail, tail[1:]))
    if schedule in ("cosine", "linear"):
        assert lr_factor(100, config) == pytest.approx(0.1) and lr_factor(500, config) == pytest.approx(0.1)
    if schedule == "constant":
        assert set(tail) == {1.0}


@pytest.mark.parametrize("settings, message", [
    (dict(decay_steps=400), r"decay_steps \(400\) must exceed warmup_steps \(400\)"),
    (dict(decay_steps=1000, lr_schedule="constant"), "read by the cosine and linear schedules only"),
    (dict(decay_steps=1000, lr_schedule="inverse_sqrt"), "not by lr_schedule 'inverse_sqrt'"),
])
def test_a_decay_that_would_end_before_the_warm_up_or_go_unread_is_refused(settings, message):
    config = TrainConfig(**{"output_dir": "x", "task": "g2p", "warmup_steps": 400, **settings})
    with pytest.raises(ValueError, match=message):
        config.validate().with_task_defaults()
    assert TrainConfig(output_dir="x", task="g2p", decay_steps=401).with_task_defaults().decay_steps == 401


@pytest.mark.parametrize("settings, warmup", [(dict(max_steps=300), 30), (dict(decay_steps=100), 10),
                                              (dict(max_steps=3), 0), (dict(max_steps=401), 400)])
def test_the_tasks_warm_up_shrinks_to_a_tenth_of_a_run_that_ends_within_it(settings, warmup):
    """g2p's 400 warm-up steps in a 300-step trial run kept the rate below its peak throughout (it never decayed)."""
    assert TrainConfig(output_dir="x", task="g2p", **settings).with_task_defaults().warmup_steps == warmup


def _toy_model(**overrides):
    vocab = toy_vocab_size(6)
    options = dict(src_vocab_size=vocab, tgt_vocab_size=vocab, embed_dim=6, hidden_size=8, encoder_layers=1,
                   decoder_layers=1, dropout=0.0)
    return Seq2Seq(Seq2SeqConfig(**{**options, **overrides})).double().eval()


@pytest.mark.parametrize("input_feeding", [True, False])
def test_scheduled_sampling_rate_one_feeds_back_the_argmax(input_feeding):
    model = _toy_model(input_feeding=input_feeding)
    pairs = [(source, target[:5] + [3] * (5 - len(target))) for source, target in
             make_pairs("reverse", 5, num_symbols=6, min_len=5, max_len=5, seed=1)]
    batch = collate(pairs, PAD_ID, BOS_ID, EOS_ID)
    sampled = model(batch.src, batch.src_lengths, batch.tgt_in, sampling_rate=1.0)
    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.init_state(encoded)
    tokens, expected = batch.tgt_in[:, 0], []
    for _ in range(batch.tgt_in.shape[1]):
        logits, state, _ = model.decode_step(tokens, state, encoded)
        expected.append(logits)
        tokens = logits.argmax(-1)
    torch.testing.assert_close(sampled, torch.stack(expected, dim=1))
    teacher = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert not torch.allclose(sampled, teacher)
    nearly_teacher = model(batch.src, batch.src_lengths, batch.tgt_in, sampling_rate=1e-12)
    torch.testing.assert_close(nearly_teacher, teacher)
    with pytest.raises(ValueError, match="sampling_rate"):
        model(batch.src, batch.src_lengths, batch.tgt_in, sampling_rate=1.5)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    # Dropout and scheduled sampling draw random numbers; the stop falls mid-epoch, the run crosses an epoch.
    common = dict(TINY, model={**TINY["model"], "dropout": 0.3}, sampling_rate=0.3, eval_every=5, decay_steps=24)
    straight = train(TrainConfig(output_dir=str(tmp_path / "a"), max_steps=24, **common), **QUIET)
    train(TrainConfig(output_dir=str(tmp_path / "b"), max_steps=11, **common), **QUIET)
    resumed = train(TrainConfig(output_dir=str(tmp_path / "b"), max_steps=24, **common), resume=True,
                    explicit={"max_steps": 24}, **QUIET)
    assert _events(tmp_path / "a", "train")[-1]["epoch"] >= 1
    assert resumed.step == straight.step == 24
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="cannot change"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), max_steps=30, **common), resume=True,
              explicit={"max_steps": 30, "batch_tokens": 99}, **QUIET)


def test_resume_uses_a_changed_lr_betas_and_weight_decay_as_config_json_records_them(tmp_path):
    """The optimizer and scheduler states of a checkpoint carry the saved run's lr, betas and weight decay; settings
    a user changes on resume replace them instead of being recorded and ignored."""
    run = tmp_path / "run"
    common = dict(TINY, output_dir=str(run), eval_every=0, lr_schedule="constant", warmup_steps=0)
    train(TrainConfig(max_steps=4, save_every=4, **common), **QUIET)
    changed = {"max_steps": 8, "lr": 5e-4, "adam_betas": [0.8, 0.95], "weight_decay": 0.1}
    train(TrainConfig(**{**common, **changed}), resume=True, explicit=changed, **QUIET)
    recorded = json.loads((run / "config.json").read_text())
    assert {name: recorded[name] for name in changed} == changed
    groups = ckpt.load_trainer_state(ckpt.find_checkpoint(run, "last"))["optimizer"]["param_groups"]
    assert [(g["lr"], tuple(g["betas"]), g["weight_decay"]) for g in groups] == [(5e-4, (0.8, 0.95), 0.1),
                                                                               (5e-4, (0.8, 0.95), 0.0)]
    assert all(group["fused"] for group in groups)  # torch's fused AdamW, which serves CPU parameters
    assert [event["lr"] for event in _events(run, "train") if event["step"] > 4] == [5e-4]


def test_crash_during_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(run), max_steps=4, eval_every=0, save_every=4, **TINY), **QUIET)
    good = ckpt.find_checkpoint(run, "last")
    before = {k: v.clone() for k, v in result.model.state_dict().items()}

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save_checkpoint(run, 8, result.model, ckpt.load_checkpoint(good)[1], {}, {})
    monkeypatch.undo()
    assert ckpt.find_checkpoint(run, "last") == good
    model, _, _ = ckpt.load_checkpoint(good)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not [path.name for path in (run / "checkpoints").iterdir() if path.name.startswith(".")]
    ckpt.save_checkpoint(run, 8, result.model, ckpt.load_checkpoint(good)[1], {}, {"step": 8})
    assert ckpt.find_checkpoint(run, "last").name == "step-00000008"


def test_a_dev_score_is_better_only_when_finite_and_strictly_better():
    assert ckpt.is_better(0.5, None, higher_is_better=False)
    assert ckpt.is_better(0.4, 0.5, higher_is_better=False) and not ckpt.is_better(0.5, 0.5, higher_is_better=False)
    assert ckpt.is_better(0.6, 0.5, higher_is_better=True) and not ckpt.is_better(0.4, 0.5, higher_is_better=True)
    for value in (float("nan"), float("inf"), float("-inf")):
        assert not ckpt.is_better(value, None, higher_is_better=True)
        assert not ckpt.is_better(value, 0.5, higher_is_better=False)


def test_training_keeps_the_best_and_stops_early(tmp_path):
    run = tmp_path / "run"
    # A learning rate this small cannot move accuracy: after the first evaluation nothing improves.
    result = train(TrainConfig(output_dir=str(run), max_steps=200, eval_every=2, patience=2, lr=1e-9,
                               keep_checkpoints=1, **TINY), **QUIET)
    assert result.stopped_early and result.step == 6
    dev = _events(run, "dev")
    assert [event["step"] for event in dev] == [2, 4, 6]
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] == 2 and best["value"] == max(event["accuracy"] for event in dev)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["step-00000002", "step-00000006"]


def test_a_run_early_stopping_ended_stays_ended_on_resume_unless_patience_grows(tmp_path):
    run = tmp_path / "run"
    common = dict(max_steps=200, eval_every=2, patience=2, lr=1e-9, **TINY)
    assert train(TrainConfig(output_dir=str(run), **common), **QUIET).step == 6
    lines = []
    again = train(TrainConfig(output_dir=str(run), **common), resume=True, explicit={}, echo=lines.append)
    assert again.step == 6 and again.stopped_early
    assert any("nothing to do: the run is already at step 6 (early stopping ended it (patience 2))" in line
               for line in lines), lines
    more = train(TrainConfig(output_dir=str(run), **{**common, "patience": 3}), resume=True,
                 explicit={"patience": 3}, **QUIET)
    assert more.step == 8 and more.stopped_early


def test_resume_with_early_stopping_ends_as_an_uninterrupted_run(tmp_path):
    """The first part ends off the --eval-every grid (step 7): its last-step evaluation, which a run never stopped
    there would not have made, counts neither for the best nor for patience once resumed."""
    common = dict(TINY, eval_every=5, patience=2, lr=1e-9, decay_steps=40)
    straight = train(TrainConfig(output_dir=str(tmp_path / "a"), max_steps=40, **common), **QUIET)
    train(TrainConfig(output_dir=str(tmp_path / "b"), max_steps=7, **common), **QUIET)
    resumed = train(TrainConfig(output_dir=str(tmp_path / "b"), max_steps=40, **common), resume=True,
                    explicit={"max_steps": 40}, **QUIET)
    assert resumed.step == straight.step and resumed.stopped_early and straight.stopped_early
    assert resumed.best == straight.best
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    best = json.loads((tmp_path / "b" / "checkpoints" / "best.json").read_text())
    assert best["step"] == straight.best["step"]


def test_the_last_step_is_always_evaluated(tmp_path):
    run = tmp_path / "run"
    # max_steps is not a multiple of eval_every: the final weights are still scored on dev and can become the best.
    result = train(TrainConfig(output_dir=str(run), max_steps=7, eval_every=3, **TINY), **QUIET)
    assert [event["step"] for event in _events(run, "dev")] == [3, 6, 7]
    assert result.best is not None
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] == result.best["step"]


def test_learns_reverse_and_bf16_autocast_runs(tmp_path):
    result = train(TrainConfig(output_dir=str(tmp_path / "fp32"), max_steps=60, eval_every=60, lr=1e-2, **TINY),
                   **QUIET)
    losses = [event["loss"] for event in _events(tmp_path / "fp32", "train")]
    assert losses[-1] < 0.9 * losses[0]
    assert result.best is not None
    train(TrainConfig(output_dir=str(tmp_path / "bf16"), max_steps=2, eval_every=0, precision="bf16", **TINY),
          **QUIET)
    assert "bf16 autocast" in (tmp_path / "bf16" / "train.log").read_text()


def test_matmul_precision_holds_for_the_run_and_is_put_back(tmp_path, monkeypatch):
    """--matmul-precision: torch.set_float32_matmul_precision for the run's life (each training step sees it), the
    process's own setting put back after, and the log says what it did to the cpu backend's products; unset, the
    process's setting is left alone."""
    import s2s_fast.train as train_module

    seen = []
    step = train_module.Trainer._train_step

    def recording_step(self, *args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(train_module.Trainer, "_train_step", recording_step)
    before = torch.get_float32_matmul_precision()
    assert before == "highest"
    train(TrainConfig(output_dir=str(tmp_path / "medium"), max_steps=2, eval_every=0, matmul_precision="medium",
                      **TINY), **QUIET)
    assert seen == ["medium", "medium"] and torch.get_float32_matmul_precision() == before
    log = (tmp_path / "medium" / "train.log").read_text()
    assert "float32 matmul precision medium (the cpu backend's products in bfloat16: " in log
    # A resumed run keeps its saved setting; torch's per-backend switches are put back too ("none": inherit).
    switches = (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    train(TrainConfig(output_dir=str(tmp_path / "medium"), max_steps=3), resume=True, explicit={"max_steps": 3},
          **QUIET)
    assert seen == ["medium"] * 3 and torch.get_float32_matmul_precision() == before
    assert (torch.backends.mkldnn.matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == switches
    # A process that set the per-backend switch itself (torch then refuses to read the string) gets it back.
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    try:
        train(TrainConfig(output_dir=str(tmp_path / "high"), max_steps=1, eval_every=0, matmul_precision="high",
                          **TINY), **QUIET)
        assert seen[-1] == "high" and torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = switches[0]
        torch.set_float32_matmul_precision(before)
    torch.set_float32_matmul_precision("high")
    try:
        train(TrainConfig(output_dir=str(tmp_path / "unset"), max_steps=1, eval_every=0, **TINY), **QUIET)
        assert seen[-1] == "high" and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert "matmul precision" not in (tmp_path / "unset" / "train.log").read_text()
    with pytest.raises(ValueError, match="matmul_precision"):
        TrainConfig(output_dir=str(tmp_path / "bad"), matmul_precision="low", **TINY).validate()


@pytest.mark.gpu
def test_trains_resumes_and_decodes_on_a_gpu(tmp_path):
    # On a GPU: bf16 autocast where the device supports it, the fused backends under auto, checkpoints that reload
    # onto the GPU, and decoding there (beam 1 equals greedy).
    run = tmp_path / "gpu"
    common = dict(TINY, device="cuda", lr=1e-2, eval_every=20)
    result = train(TrainConfig(output_dir=str(run), max_steps=40, **common), **QUIET)
    assert next(result.model.parameters()).is_cuda
    if torch.cuda.is_bf16_supported():
        assert "bf16 autocast" in (run / "train.log").read_text()
    losses = [event["loss"] for event in _events(run, "train")]
    assert torch.isfinite(torch.tensor(losses)).all() and losses[-1] < 0.9 * losses[0]
    resumed = train(TrainConfig(output_dir=str(run), max_steps=44, **common), resume=True,
                    explicit={"max_steps": 44}, **QUIET)
    assert resumed.step == 44 and resumed.best is not None
    model, _, _ = ckpt.load_checkpoint(ckpt.find_checkpoint(run, "best"), device="cuda")
    pairs = make_pairs("reverse", 6, num_symbols=10, min_len=3, max_len=8, seed=5)
    batch = collate(pairs, PAD_ID, BOS_ID, EOS_ID)
    src, lengths = batch.src.cuda(), batch.src_lengths.cuda()
    greedy = model.generate(src, lengths, max_len=12)
    assert greedy == model.generate(src, lengths, beam_size=1, max_len=12)
    vocab = model.config.tgt_vocab_size
    assert len(greedy) == 6 and all(0 <= token < vocab for tokens in greedy for token in tokens)


def test_a_non_finite_loss_stops_training_and_leaves_the_last_good_checkpoint_best(tmp_path, monkeypatch):
    """The loss turns NaN at step 5: training stops there with NonFiniteLoss, before any update; the step-4
    checkpoint stays latest and best.json names a finite score."""
    import s2s_fast.train as training

    run = tmp_path / "run"
    real_loss = training.sequence_loss
    calls = []

    def nan_at_step_5(*args, **kwargs):
        calls.append(None)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(training, "sequence_loss", nan_at_step_5)
    with pytest.raises(training.NonFiniteLoss, match=r"step 5: the loss is nan; training stopped and the last good "
                                                     r"checkpoint, step-00000004, stays"):
        train(TrainConfig(output_dir=str(run), max_steps=10, eval_every=2, **TINY), **QUIET)
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 4
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] in (2, 4) and best["value"] == best["value"]
    model, _, _ = ckpt.load_checkpoint(ckpt.find_checkpoint(run, "last"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "step 5: the loss is nan" in (run / "train.log").read_text()


def test_weights_made_infinite_by_an_update_are_never_saved_or_scored(tmp_path, monkeypatch):
    import s2s_fast.train as training

    run = tmp_path / "run"
    real_step = torch.optim.AdamW.step

    def step_then_poison(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        if self.state[self.param_groups[0]["params"][0]]["step"] == 3:
            self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_poison)
    with pytest.raises(training.NonFiniteLoss, match=r"step 3: the update made the weights NaN or infinite"):
        train(TrainConfig(output_dir=str(run), max_steps=10, eval_every=3, save_every=1, **TINY), **QUIET)
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    assert not (run / "checkpoints" / "best.json").exists() and not (run / "metrics.jsonl").exists()


def test_a_huge_learning_rate_stops_in_one_line_through_the_cli(tmp_path, capsys):
    from s2s_fast.cli import main

    for lr in ("1e30", "1e38"):
        code = main(["train", "--output-dir", str(tmp_path / lr), "--max-steps", "10", "--eval-every", "2",
                     "--warmup-steps", "0", "--clip-norm", "0", "--lr", lr, "--task", "reverse", "--toy-train-size",
                     "300", "--batch-tokens", "160", "--device", "cpu", "--progress", "off"])
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1 and "training stopped" in err, err
        assert not (tmp_path / lr / "checkpoints" / "best.json").exists()


def test_a_stop_request_is_recorded_once_then_signals_act_as_before():
    import os
    import signal

    from s2s_fast.train import StopRequests

    # Python's own SIGINT handler first: a process started in the background by a shell without job control inherits
    # SIGINT ignored, and Python then leaves it so.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequests() as requests:
            os.kill(os.getpid(), signal.SIGTERM)
            assert requests.signal == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_sigint_and_sigterm_save_a_checkpoint_then_exit_128_plus_the_signal(tmp_path, signum, code):
    """Through the console script (python -m s2s_fast), with saves every 100000 steps: the signal still leaves a
    checkpoint of the step it interrupted, and --resume continues from it."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    command = [sys.executable, "-m", "s2s_fast", "train", "--output-dir", str(run), "--task", "reverse",
               "--toy-train-size", "300", "--batch-tokens", "160", "--device", "cpu", "--threads", "1", "--progress",
               "off", "--log-every", "1", "--eval-every", "0", "--save-every", "100000", "--max-steps", "100000",
               "--model", "hidden_size=16", "--model", "embed_dim=8"]
    trainer = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "train.log").exists() or "step 3 " not in (run / "train.log").read_text():
        assert trainer.poll() is None and time.monotonic() < deadline, trainer.communicate()
        time.sleep(0.05)
    trainer.send_signal(getattr(signal, signum))
    out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == code and f"interrupted ({signum})" in err, err
    step = json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    assert step >= 3 and f"{signum} at step {step}: checkpoint step-{step:08d} saved" in out
    ckpt.load_checkpoint(ckpt.find_checkpoint(run, "last"))
    resumed = subprocess.run([*command[:6], "--resume", "--max-steps", str(step + 1)], cwd=root, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0 and f"at step {step} " in resumed.stdout and f"done: step {step + 1}" in (
        resumed.stdout), resumed.stderr


def _stop_at(monkeypatch, step, signum):
    """Deliver ``signum`` to this process during training step ``step``, as Ctrl-C in a terminal would."""
    import os

    from s2s_fast.train import Trainer

    original = Trainer._train_step

    def train_step(self, batch):
        if self.progress.step == step - 1:
            os.kill(os.getpid(), signum)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", train_step)


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_a_run_stopped_before_its_last_steps_evaluation_makes_it_on_resume(tmp_path, monkeypatch, old_checkpoint):
    """Stopped by Ctrl-C at step 7 (off the --eval-every grid) and resumed with --max-steps 7, the run ended without
    evaluating its last step ("nothing to do"), where a run that reaches its last step always evaluates it. A
    checkpoint written before the trainer state recorded its last evaluation counts as unevaluated off the grid."""
    import signal

    from s2s_fast.train import TrainingInterrupted

    run = tmp_path / "run"
    common = dict(TINY, output_dir=str(run), eval_every=5)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as patch:
            _stop_at(patch, 7, signal.SIGINT)
            with pytest.raises(TrainingInterrupted):
                train(TrainConfig(max_steps=20, **common), **QUIET)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert [event["step"] for event in _events(run, "dev")] == [5]
    state_path = run / "checkpoints" / "step-00000007" / ckpt.TRAINER_STATE
    if old_checkpoint:
        state = torch.load(state_path, weights_only=False)
        assert state.pop("evaluated_step") == 5
        torch.save(state, state_path)
    lines = []
    result = train(TrainConfig(max_steps=7, **common), resume=True, explicit={"max_steps": 7}, echo=lines.append)
    assert [event["step"] for event in _events(run, "dev")] == [5, 7]
    assert "evaluating step 7, the last step, which the stop came before" in lines
    assert not any(line.startswith("nothing to do") for line in lines)
    assert torch.load(state_path, weights_only=False)["evaluated_step"] == 7
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert result.best["step"] == best["step"] and best["step"] in (5, 7)
    # Evaluated now: a resume with nothing to do leaves it so, and one that trains on sets that evaluation aside.
    lines.clear()
    train(TrainConfig(max_steps=7, **common), resume=True, explicit={"max_steps": 7}, echo=lines.append)
    assert any(line.startswith("nothing to do: the run is already at step 7") for line in lines)
    assert [event["step"] for event in _events(run, "dev")] == [5, 7]
    lines.clear()
    train(TrainConfig(max_steps=10, **common), resume=True, explicit={"max_steps": 10}, echo=lines.append)
    assert [event["step"] for event in _events(run, "dev")] == [5, 7, 10]
    assert any("the dev evaluation at step 7 (the last step, off the --eval-every grid)" in line for line in lines)


def test_no_steps_loss_goes_unlogged_when_a_signal_or_early_stopping_ends_the_run(tmp_path, monkeypatch):
    """The loss of the steps since the last loss line was dropped when Ctrl-C (or early stopping) ended the run."""
    import signal

    from s2s_fast.train import TrainingInterrupted

    run = tmp_path / "stopped"
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as patch:
            _stop_at(patch, 7, signal.SIGINT)
            with pytest.raises(TrainingInterrupted):
                train(TrainConfig(**{**TINY, "output_dir": str(run), "max_steps": 20, "eval_every": 0}), **QUIET)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert [event["step"] for event in _events(run, "train")] == [4, 7]
    # A learning rate of 1e-30 changes no prediction after the first evaluation: patience 1 ends the run at the
    # second, step 10.
    run = tmp_path / "early"
    train(TrainConfig(**{**TINY, "output_dir": str(run), "max_steps": 20, "eval_every": 5, "patience": 1,
                         "lr": 1e-30}), **QUIET)
    assert [event["step"] for event in _events(run, "dev")] == [5, 10]
    assert [event["step"] for event in _events(run, "train")] == [4, 5, 8, 10]


def test_a_resume_on_another_number_of_processes_goes_on_after_the_batches_taken(tmp_path):
    """The position within the epoch counts each process's batches: a 2-process run at batch 3 of its epoch has taken
    6 of the epoch's batches, and resumed on one process it re-trained batches 3-5 (and the reverse skipped some)."""
    run = tmp_path / "run"
    common = dict(TINY, output_dir=str(run), eval_every=0)
    train(TrainConfig(max_steps=6, **common), **QUIET)
    path = run / "checkpoints" / "step-00000006" / ckpt.TRAINER_STATE
    state = torch.load(path, weights_only=False)
    assert state["epoch"] == 0 and state["epoch_step"] == 6
    # As a 2-process run would have saved it after 3 batches on each process.
    torch.save({**state, "world_size": 2, "rng": state["rng"] * 2, "epoch_step": 3}, path)
    lines = []
    train(TrainConfig(max_steps=7, **common), resume=True, explicit={"max_steps": 7}, echo=lines.append)
    assert any("the epoch goes on after the 6 batches of it taken" in line for line in lines), lines
    resumed = torch.load(run / "checkpoints" / "step-00000007" / ckpt.TRAINER_STATE, weights_only=False)
    assert (resumed["epoch"], resumed["epoch_step"], resumed["world_size"]) == (0, 7, 1)


@pytest.mark.parametrize("eval_every_on_resume", [5, 3])
def test_a_checkpoint_on_the_grid_written_before_the_field_counts_as_evaluated(tmp_path, eval_every_on_resume):
    """On the grid of the run's own --eval-every, which the resume may change."""
    run = tmp_path / "run"
    common = dict(TINY, output_dir=str(run), eval_every=5)
    train(TrainConfig(max_steps=10, **common), **QUIET)
    common["eval_every"] = eval_every_on_resume
    state_path = run / "checkpoints" / "step-00000010" / ckpt.TRAINER_STATE
    state = torch.load(state_path, weights_only=False)
    assert state.pop("evaluated_step") == 10
    torch.save(state, state_path)
    lines = []
    train(TrainConfig(max_steps=10, **common), resume=True, explicit={"max_steps": 10}, echo=lines.append)
    assert any(line.startswith("nothing to do: the run is already at step 10") for line in lines)
    assert [event["step"] for event in _events(run, "dev")] == [5, 10]


def test_the_log_keeps_every_loss_line_and_each_the_rate_its_step_ran_at(tmp_path):
    """With the progress bar shown, the loss lines went to the bar alone and train.log had none; and the rate logged
    with step N was the scheduler's for step N + 1."""
    run = tmp_path / "run"
    config = TrainConfig(**{**TINY, "output_dir": str(run), "max_steps": 8, "eval_every": 0, "warmup_steps": 10,
                            "lr": 1e-3, "log_every": 1, "progress": "on"})
    train(config, **QUIET)
    log = (run / "train.log").read_text()
    assert [int(line.split()[1]) for line in log.splitlines() if line.startswith("step ")] == list(range(1, 9))
    assert [event["lr"] for event in _events(run, "train")] == pytest.approx([1e-4 * k for k in range(1, 9)])
    assert "note: the warm-up (10 steps) outlasts the run (8)" in log


def test_without_dev_evaluation_the_run_checkpoints_every_tenth_of_it():
    """The parallel task without dev files checkpointed every --eval-every (1,000) steps, as if it scored dev."""
    config = TrainConfig(output_dir="x", task="parallel", train_src="a", train_tgt="b", max_steps=500)
    assert config.with_task_defaults().save_every == 50
    assert dataclasses.replace(config, dev_src="c", dev_tgt="d").with_task_defaults().save_every == 1000


def test_a_ctc_head_trains_beside_the_decoder_with_the_weighted_loss(tmp_path, monkeypatch):
    """With model ctc_weight w the trainer minimises (1 - w) x the decoder's cross-entropy + w x CTC's; the head
    is saved with the weights, and decoding (dev evaluation) reads the decoder alone."""
    from s2s_fast import train as train_module

    seen = {"decoder": [], "ctc": []}
    sequence_loss, ctc_loss = train_module.sequence_loss, Seq2Seq.ctc_loss

    def spy_sequence(*args, **kwargs):
        seen["decoder"].append(float((value := sequence_loss(*args, **kwargs)).detach()))
        return value

    def spy_ctc(self, *args):
        seen.setdefault("head", self.ctc_head.weight.detach().clone())  # the head's weights before any update
        seen["ctc"].append(float((value := ctc_loss(self, *args)).detach()))
        return value

    monkeypatch.setattr(train_module, "sequence_loss", spy_sequence)
    monkeypatch.setattr(Seq2Seq, "ctc_loss", spy_ctc)
    run = tmp_path / "run"
    settings = {**TINY, "log_every": 1, "model": {**TINY["model"], "ctc_weight": 0.3}}
    result = train(TrainConfig(output_dir=str(run), max_steps=6, eval_every=3, **settings), **QUIET)
    logged = _events(run, "train")
    assert len(logged) == len(seen["ctc"]) == len(seen["decoder"]) == 6
    for event, decoder, ctc in zip(logged, seen["decoder"], seen["ctc"]):
        assert ctc > 0 and event["loss"] == pytest.approx(0.7 * decoder + 0.3 * ctc, rel=1e-5)
        # Each part is logged beside the sum.
        assert event["ctc_loss"] == pytest.approx(ctc, rel=1e-5)
        assert event["decoder_loss"] == pytest.approx(decoder, rel=1e-5)
    line = next(line for line in (run / "train.log").read_text().splitlines() if line.startswith("step 6 "))
    last = logged[-1]
    assert f"loss {last['loss']:.4f} (decoder {last['decoder_loss']:.4f}, ctc {last['ctc_loss']:.4f})" in line
    assert len(_events(run, "dev")) == 2
    model, _, _ = ckpt.load_checkpoint(ckpt.find_checkpoint(run, "last"))
    assert model.config.ctc_weight == 0.3
    torch.testing.assert_close(model.ctc_head.weight, result.model.ctc_head.weight)
    assert not torch.allclose(model.ctc_head.weight, seen["head"])  # trained, and saved as trained
