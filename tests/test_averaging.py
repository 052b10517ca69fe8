"""Averaging a run's last checkpoints (decode / evaluate --average N, s2s_fast.checkpoint.open_averaged): the mean of
their weights, taken from the checkpoints on disk up to the one --checkpoint names, refused with a message saying
what is there when they are not; tied weights averaged once; a reader racing the run that prunes follows it."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_run_directory import QUIET, TINY, _run

from s2s_fast import checkpoint as ckpt
from s2s_fast.models import Seq2Seq, Seq2SeqConfig
from s2s_fast.train import train
from s2s_fast.train_config import TrainConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A toy run of 6 steps saving every 2 and keeping all three checkpoints (no dev evaluation: no best)."""
    run = tmp_path_factory.mktemp("averaging") / "run"
    train(TrainConfig(output_dir=str(run), max_steps=6, eval_every=0, save_every=2, keep_checkpoints=3, **TINY),
          **QUIET)
    return run


def _names(checkpoints):
    return [checkpoint.name for checkpoint in checkpoints]


def _mean_of_files(checkpoints):
    states = [load_file(str(checkpoint / ckpt.MODEL_WEIGHTS)) for checkpoint in checkpoints]
    return {name: torch.stack([state[name].double() for state in states]).mean(0).float() for name in states[0]}


def test_the_model_is_the_mean_of_the_weights_of_the_last_n_checkpoints(run):
    assert _names(ckpt.select_checkpoints(run, "last", 3)) == ["step-00000002", "step-00000004", "step-00000006"]
    assert _names(ckpt.select_checkpoints(run, "last", 2)) == ["step-00000004", "step-00000006"]
    assert _names(ckpt.select_checkpoints(run, "best", 1)) == ["step-00000006"]  # no dev evaluation: the last
    # A checkpoint directory given itself ends the selection, also as a relative path.
    assert _names(ckpt.select_checkpoints(run / "checkpoints" / "step-00000004", None, 2)) == [
        "step-00000002", "step-00000004"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run / "checkpoints")
        assert _names(ckpt.select_checkpoints("step-00000004", None, 2)) == ["step-00000002", "step-00000004"]

    checkpoints, model, task, train_config = ckpt.open_averaged(run, "last", 3)
    assert _names(checkpoints) == ["step-00000002", "step-00000004", "step-00000006"]
    assert not model.training and task.name == "reverse" and train_config["max_steps"] == 6
    expected = _mean_of_files(checkpoints)
    last = load_file(str(checkpoints[-1] / ckpt.MODEL_WEIGHTS))
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=1e-7, msg=name)
    # The checkpoints differ, so the mean is not any one of them.
    assert any(not torch.equal(state[name], last[name]) for name in last)

    one, model_one, _, _ = ckpt.open_averaged(run, "last", 1)
    assert _names(one) == ["step-00000006"]
    assert all(torch.equal(model_one.state_dict()[name], last[name]) for name in last)


def test_tied_weights_are_averaged_once():
    """The target embedding and the output projection are one tensor: averaging must not fold it in twice."""
    config = Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=13, embed_dim=16, hidden_size=16, tie_embeddings=True)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(Seq2Seq(config))
    expected = {name: torch.stack([dict(m.named_parameters())[name].detach().double() for m in models]).mean(0)
                for name, _ in models[0].named_parameters()}
    averaged = ckpt.average_models(models, [Path(f"m{i}") for i in range(3)])
    for name, parameter in averaged.named_parameters():
        torch.testing.assert_close(parameter.detach().double(), expected[name], rtol=0, atol=1e-7, msg=name)


def test_what_cannot_be_averaged_is_refused_with_what_is_there(run, tmp_path):
    with pytest.raises(ValueError, match=r"averaging 4 checkpoints up to step-00000006 \(last\) needs 4, and 3 are "
                                         r"on disk \(step-00000002, step-00000004, step-00000006\).*"
                                         r"--keep-checkpoints 4"):
        ckpt.select_checkpoints(run, "last", 4)
    with pytest.raises(ValueError, match=r"averaging 3 checkpoints up to step-00000004 needs 3, and 2 are on disk "
                                         r"\(step-00000002, step-00000004\); a run keeps the best"):
        ckpt.select_checkpoints(run / "checkpoints" / "step-00000004", None, 3)
    with pytest.raises(ValueError, match=r"up to step-00000006 \(best\) needs 4, and 3 are on disk .*so those "
                                         r"before an earlier best are pruned: average up to the last one "
                                         r"\(--checkpoint last\), or train with --keep-checkpoints 4"):
        ckpt.select_checkpoints(run, "best", 4)
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(ValueError, match="must be a positive integer"):
            ckpt.select_checkpoints(run, "last", bad)
    # A checkpoint directory outside a run has no neighbours to average with; by itself it is fine.
    alone = tmp_path / "alone"
    shutil.copytree(run / "checkpoints" / "step-00000004", alone)
    assert _names(ckpt.select_checkpoints(alone, None, 1)) == ["alone"]
    with pytest.raises(ValueError, match="--checkpoint best picks a run's checkpoint, and .*alone is a checkpoint "
                                         "directory itself"):  # it names itself: which was ignored
        ckpt.select_checkpoints(alone, "best", 1)
    with pytest.raises(ValueError, match="not in one; give the run's directory"):
        ckpt.select_checkpoints(alone, None, 2)
    # Models of different architectures have no mean.
    small = Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=13, embed_dim=8, hidden_size=16)
    with pytest.raises(ValueError, match="b cannot be averaged with a: their model configurations differ"):
        ckpt.average_models([Seq2Seq(small), Seq2Seq(Seq2SeqConfig(**{**small.to_dict(), "cell": "gru"}))],
                            [Path("a"), Path("b")])


def test_a_reader_averaging_follows_checkpoints_the_training_run_prunes_while_it_loads(tmp_path, monkeypatch):
    run = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(run), max_steps=2, eval_every=0, save_every=1, keep_checkpoints=2,
                               **TINY), **QUIET)
    real_load_task = ckpt.load_task

    def training_saves_and_prunes_meanwhile(directory):
        if Path(directory).name == "step-00000001":  # the run saves step 3 and prunes step 1, keeping two
            state = ckpt.load_trainer_state(directory)
            ckpt.save_checkpoint(run, 3, result.model, real_load_task(directory), {}, {**state, "step": 3}, 2)
        return real_load_task(directory)

    monkeypatch.setattr(ckpt, "load_task", training_saves_and_prunes_meanwhile)
    checkpoints, _, _, _ = ckpt.open_averaged(run, "last", 2)
    assert _names(checkpoints) == ["step-00000002", "step-00000003"]  # not [1, 2]: step 1 went while it loaded
    assert not (run / "checkpoints" / "step-00000001").exists()
    monkeypatch.undo()

    # The run moves latest.json on and prunes between the reader's reading it and listing the checkpoints: the
    # reader sees one checkpoint up to the old pointer, not two, and selects again instead of refusing.
    real_find = ckpt.find_checkpoint
    moved = []

    def training_saves_and_prunes_after_the_pointer_is_read(path, which=None):
        found = real_find(path, which)
        if not moved:
            moved.append(found.name)
            state = ckpt.load_trainer_state(found)
            ckpt.save_checkpoint(run, 4, result.model, real_load_task(found), {}, {**state, "step": 4}, 2)
        return found

    monkeypatch.setattr(ckpt, "find_checkpoint", training_saves_and_prunes_after_the_pointer_is_read)
    checkpoints, _, _, _ = ckpt.open_averaged(run, "last", 2)
    assert moved == ["step-00000003"] and _names(checkpoints) == ["step-00000003", "step-00000004"]


def test_an_average_over_checkpoints_the_run_pruned_between_is_noted(run, tmp_path, capsys):
    """The run saved every 2 steps; an average of steps 2 and 6 (step 4 pruned, as when an old best stays beside the
    recent ones) gets a note, an average of saves in a row none."""
    checkpoints = run / "checkpoints"
    assert ckpt.pruned_between([checkpoints / "step-00000002", checkpoints / "step-00000004",
                                checkpoints / "step-00000006"]) is None
    assert ckpt.pruned_between([checkpoints / "step-00000006"]) is None
    note = ckpt.pruned_between([checkpoints / "step-00000002", checkpoints / "step-00000006"])
    assert note == ("the checkpoints averaged (steps 2, 6) lie further apart than the run saved (every 2 steps): it "
                    "pruned those between; train with --keep-checkpoints 2 to keep the last ones")

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-00000004")
    code, out, err = _run(capsys, "evaluate", copy, "--checkpoint", "last", "--average", 2, "--beam-size", 1,
                          "--device", "cpu")
    assert code == 0 and "the average of step-00000002, step-00000006" in out, (out, err)
    assert "note: the checkpoints averaged (steps 2, 6) lie further apart than the run saved" in err


def test_evaluate_and_decode_average_and_say_which_checkpoints(run, tmp_path, capsys):
    code, out, err = _run(capsys, "evaluate", run, "--checkpoint", "last", "--average", 3, "--beam-size", 2,
                          "--split", "test", "--device", "cpu")
    assert code == 0, err
    assert re.search(r"reverse test: accuracy \d+\.\d\d%.*step-00000006, the average of step-00000002, "
                     r"step-00000004, step-00000006, ", out), out
    assert "note:" not in err
    report = json.loads((run / "evaluations" / "test-step-00000006-avg3-beam2.json").read_text())
    assert report["average"] == 3 and [Path(c).name for c in report["averaged"]] == [
        "step-00000002", "step-00000004", "step-00000006"]
    assert (run / "evaluations" / "test-step-00000006-avg3-beam2.hyp").is_file()

    inputs, output = tmp_path / "in.txt", tmp_path / "out.txt"
    inputs.write_text("1 2 3\n3 1\n")
    code, _, err = _run(capsys, "decode", run, "--average", 2, "--input", inputs, "--output", output,
                        "--device", "cpu")
    assert code == 0 and len(output.read_text().splitlines()) == 2, err
    written = json.loads(Path(f"{output}.config.json").read_text())
    assert written["average"] == 2 and [Path(c).name for c in written["averaged"]] == [
        "step-00000004", "step-00000006"]

    # Each member of an ensemble is its run's average (a copy of the run: one run given twice is refused).
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluations"))
    code, out, err = _run(capsys, "evaluate", run, copy, "--average", 2, "--beam-size", 1, "--device", "cpu")
    assert code == 0 and out.count("the average of step-00000004, step-00000006") == 2, (out, err)

    for average, message in ((4, "needs 4, and 3 are on disk"), (0, "must be a positive integer, got 0")):
        code, _, err = _run(capsys, "evaluate", run, "--average", average, "--device", "cpu")
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_checkpoint_given_by_a_relative_path_lies_in_its_run(run, tmp_path, capsys, monkeypatch):
    """"step-00000004" inside checkpoints/, "." inside it and "../step-00000004" from a sibling: their run was read
    from the path's parents' names, so evaluations went inside the checkpoint (pruned with it), "." named its files
    "test--beam2", and averaging was refused as outside a run."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    checkpoints = copy / "checkpoints"
    for where, given in ((checkpoints, "step-00000004"), (checkpoints / "step-00000004", "."),
                         (checkpoints / "step-00000006", "../step-00000004")):
        monkeypatch.chdir(where)
        assert ckpt.run_directory(ckpt.find_checkpoint(given)) == copy
        assert _names(ckpt.select_checkpoints(given, None, 2)) == ["step-00000002", "step-00000004"]
        code, out, err = _run(capsys, "evaluate", given, "--beam-size", 1, "--max-examples", 4, "--device", "cpu")
        assert code == 0 and "step-00000004" in out, err
    assert {"test-step-00000004-beam1-n4.hyp", "test-step-00000004-beam1-n4.json"} <= {
        p.name for p in (copy / "evaluations").iterdir()}
    assert not any((checkpoints / name / "evaluations").exists() for name in ("step-00000004", "step-00000006"))
    # A link to a checkpoint, and ".." after a link, lie in the run the link leads to.
    (tmp_path / "mybest").symlink_to(checkpoints / "step-00000004")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "s").symlink_to(checkpoints / "step-00000006")
    for given in (tmp_path / "mybest", tmp_path / "links" / "s" / ".." / "step-00000004"):
        assert ckpt.find_checkpoint(given) == (checkpoints / "step-00000004").resolve()
        assert _names(ckpt.select_checkpoints(given, None, 2)) == ["step-00000002", "step-00000004"]


def _with_another_runs_checkpoint(run, tmp_path, **settings):
    """A copy of ``run`` (checkpoints 2, 4 and 6) with the step-2 checkpoint of another 2-step run, trained with
    TINY and ``settings``, copied into its checkpoints/ as step 5."""
    other = tmp_path / "other"
    train(TrainConfig(output_dir=str(other), max_steps=2, eval_every=0, **{**TINY, **settings}), **QUIET)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    shutil.copytree(other / "checkpoints" / "step-00000002", copy / "checkpoints" / "step-00000005")
    return copy


def test_checkpoints_of_another_task_are_not_averaged(run, tmp_path, capsys):
    """A checkpoint of another run copied into checkpoints/: the configurations match, the tasks do not; the
    weights of two tasks' models were averaged and decoded, silently."""
    copy = _with_another_runs_checkpoint(run, tmp_path, task="copy")
    with pytest.raises(ValueError, match=r"step-00000006 cannot be averaged with .*step-00000005: task reverse "
                                         "against copy"):
        ckpt.open_averaged(copy, "last", 2)
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2\n")
    code, _, err = _run(capsys, "decode", copy, "--checkpoint", "last", "--average", 2, "--input", inputs,
                        "--device", "cpu")
    assert code == 1 and "task reverse against copy" in err and len(err.strip().splitlines()) == 1, err


def test_checkpoints_of_another_run_of_the_same_settings_are_not_averaged(run, tmp_path):
    """A checkpoint of a run with the same task, data and model but another seed, copied into checkpoints/: two
    runs' weights averaged are no model, and nothing but the seed told them apart."""
    copy = _with_another_runs_checkpoint(run, tmp_path, seed=7)
    with pytest.raises(ValueError, match=r"step-00000006 cannot be averaged with .*step-00000005: it comes from "
                                         r"another run \(seed 0 against 7\)"):
        ckpt.open_averaged(copy, "last", 2)
    assert _names(ckpt.open_averaged(copy, "last", 1)[0]) == ["step-00000006"]


def test_checkpoints_of_another_run_of_the_same_seed_are_not_averaged(run, tmp_path):
    """The same, with the same seed, task and model and another batching (the model's configuration, compared on
    load, is the same): only the seed was compared, so the two runs' weights were averaged as one model."""
    copy = _with_another_runs_checkpoint(run, tmp_path, batch_tokens=200)
    with pytest.raises(ValueError, match=r"step-00000006 cannot be averaged with .*step-00000005: it comes from "
                                         r"another run \(batch_tokens 160 against 200\)"):
        ckpt.open_averaged(copy, "last", 2)


def test_checkpoints_of_one_run_across_a_resume_that_restates_its_model_are_averaged(tmp_path, capsys):
    """A resume that restates the run's own model value (--model dropout=0.0) saves a training configuration whose
    model setting is spelt otherwise; comparing every setting fixed on resume refused that run's own checkpoints."""
    from test_run_directory import TINY_FLAGS

    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 0, "--save-every", 1,
                "--keep-checkpoints", 3, *TINY_FLAGS)[0] == 0
    assert _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 3, "--model", "dropout=0.0")[0] == 0
    checkpoints = ckpt.open_averaged(run, "last", 2)[0]
    assert _names(checkpoints) == ["step-00000002", "step-00000003"]
    saved = [ckpt.read_train_config(checkpoint)["model"] for checkpoint in checkpoints]
    assert saved[0] != saved[1], saved  # the case this test is for


def test_averaging_from_a_checkpoint_named_without_its_step_says_so(run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "step-00000006").rename(copy / "checkpoints" / "step-00000006-keep")
    with pytest.raises(ValueError, match=r"step-00000006-keep: averaging 2 checkpoints takes the ones before it by "
                                         r"the step in their names \(step-<digits>\)"):
        ckpt.open_averaged(copy / "checkpoints" / "step-00000006-keep", None, 2)
