"""The command line: help everywhere, the demo end to end on a tiny budget, bad arguments, the train flags and
config files (through s2s_fast.cli.main, the console script's entry point, in this process)."""

import dataclasses
import json
import re
import subprocess
import sys

import pytest

from s2s_fast.cli import build_parser, main
from s2s_fast.train_config import TrainConfig


def test_help_for_every_command(capsys):
    commands = build_parser().command_parsers
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as info:
            main(["--help"] if name is None else [name, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_demo_runs_and_reports(capsys):
    """Its loss and token accuracy too, where the time allows fewer than the 100 steps between its lines."""
    assert main(["demo", "--seconds", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "held-out exact match" in out and "->" in out and "loss" in out and "token accuracy" in out


def test_the_demo_trains_on_none_of_its_held_out_sources(monkeypatch):
    """Short sources repeat between draws: 18% of the held-out ones had been trained on after 2,000 steps."""
    from s2s_fast import demo

    batches = []
    collate = demo.collate
    monkeypatch.setattr(demo, "collate", lambda pairs, *ids: batches.append(list(pairs)) or collate(pairs, *ids))
    demo.run_demo(seconds=1.0, device="cpu", log=lambda line: None)
    held_out = {tuple(source) for source, _ in batches[-1]}
    trained = [tuple(source) for batch in batches[:-1] for source, _ in batch]
    assert len(held_out) > 300 and trained and not held_out.intersection(trained)


def test_module_entry_point_rejects_unknown_command():
    result = subprocess.run([sys.executable, "-m", "s2s_fast", "fly"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def _train_parser():
    return build_parser().command_parsers["train"]


@pytest.mark.parametrize("argv, unknown", [(["train", "--output-dir", "x", "--bogus"], "--bogus"),
                                           (["evaluate", "runs/x", "--bogus"], "--bogus"),
                                           (["bench", "--quick", "--bogus", "1"], "--bogus 1"),
                                           (["decode", "runs/x", "--nope"], "--nope")])
def test_unknown_argument_is_refused_with_its_commands_usage(argv, unknown, capsys):
    """argparse's own check names the top-level usage (s2s-fast [-h] COMMAND ...), which shows none of the
    command's options."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: s2s-fast {argv[0]}" in err
    assert f"s2s-fast {argv[0]}: error: unrecognized arguments: {unknown}" in err


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def test_every_training_setting_has_a_flag_whose_help_shows_its_default():
    """One source of settings: each TrainConfig field is a train flag whose help ends with the dataclass default
    (each task's, for a setting whose default depends on the task)."""
    actions = {action.dest: action for action in _train_parser()._actions}
    for spec in dataclasses.fields(TrainConfig):
        action = actions[spec.name]
        assert action.option_strings == ["--" + spec.name.replace("_", "-")]
        task_defaults = spec.metadata["task_defaults"]
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        if task_defaults:
            shown = ", ".join(f"{'toy tasks' if task == 'toy' else task}: {'none' if value is None else value}"
                              for task, value in task_defaults.items())
            assert set(task_defaults) == {"g2p", "parallel", "toy"} and default is None
        elif default is None:
            shown = spec.metadata["unset"] or "none"
        else:
            shown = _shown(default) if default != {} else "none"
        assert action.help.endswith(f"(default {shown})"), (spec.name, action.help)


def test_a_flag_given_its_default_parses_to_the_dataclass_default():
    """The flags' types come from the fields' annotations: --adam-betas 0.9 0.98 gives [0.9, 0.98], and so on."""
    parser = _train_parser()
    for spec in dataclasses.fields(TrainConfig):
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        if default is None or isinstance(default, dict):
            continue
        flag = "--" + spec.name.replace("_", "-")
        parsed = vars(parser.parse_args([flag, *_shown(default).split()]))
        assert parsed[spec.name] == default and type(parsed[spec.name]) is type(default), spec.name


TINY_TOY = ["--task", "reverse", "--toy-train-size", "50", "--toy-eval-size", "10", "--batch-tokens", "160",
            "--device", "cpu", "--threads", "1", "--eval-every", "0", "--model", "hidden_size=16", "--model",
            "embed_dim=8"]


@pytest.mark.parametrize("line,setting,value", [
    ("lr: 1e-3", "lr", 0.001),  # PyYAML reads 1e-3 as a string
    ("max_steps: '2'", "max_steps", 2),
    ("max_steps: 2e0", "max_steps", 2),
    ("weight_decay: 0", "weight_decay", 0.0),
    ("progress: off", "progress", "off"),  # PyYAML reads off as False
    ("model: {dropout: 1e-1, bidirectional: 'false'}", "model", {"dropout": 0.1, "bidirectional": False,
                                                                 "hidden_size": 16, "embed_dim": 8}),
])
def test_config_file_values_are_coerced_to_the_setting_type(tmp_path, capsys, line, setting, value):
    config = tmp_path / "settings.yaml"
    config.write_text(f"max_steps: 1\n{line}\n")
    assert main(["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), *TINY_TOY]) == 0
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())[setting]
    assert resolved == value and type(resolved) is type(value)


@pytest.mark.parametrize("line,message", [
    ("lr: .nan", r"lr must be a finite number, got nan"),
    ("lr: .inf", r"lr must be a finite number, got inf"),
    ("lr: true", r"lr must be a number, got True"),
    ("lr: abc", r"lr must be a number, got 'abc'"),
    ("max_batch_size: true", r"max_batch_size must be an integer, got True"),
    ("eval_every: 2.5", r"eval_every must be an integer, got 2.5"),
    ("max_steps: -3", r"max_steps must be a positive integer, got -3"),
    ("patience: null", r"patience cannot be null"),
    ("adam_betas: [0.9, x]", r"adam_betas\[1\] must be a number, got 'x'"),
    ("output_dir: 7", r"output_dir must be text, got 7"),
    ("model: 3", r"model must be a mapping of names to values, got 3"),
    ("model: {hidden: 3}", r"model: unknown field\(s\) hidden; valid fields: embed_dim, hidden_size, "),
    ("model: {src_vocab_size: 3}", r"model: src_vocab_size cannot be set: the data set the vocabulary sizes"),
    ("model: {eos_id: 5, pad_id: 4}", r"model: eos_id, pad_id cannot be set: the data set the vocabulary sizes and "
                                      r"the special tokens' ids"),
    ("model: {dropout: abc}", r"model: dropout must be a number, got 'abc'"),
    ("model: {encoder_layers: 1.5}", r"model: encoder_layers must be an integer, got 1.5"),
])
def test_a_bad_config_file_value_is_one_line_naming_the_file_and_the_setting(tmp_path, capsys, line, message):
    config = tmp_path / "settings.yaml"
    config.write_text(f"{line}\n")
    code = main(["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), "--task", "reverse"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(rf"train: error: {re.escape(str(config))}: {message}", err), err
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_model_too_large_for_memory_is_one_line(tmp_path, capsys):
    code = main(["train", "--output-dir", str(tmp_path / "run"), "--task", "reverse", "--max-steps", "1",
                 "--model", "hidden_size=1000000"])  # 4 TB of parameters
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "the model does not fit in this machine's memory" in err and "--model hidden_size" in err


@pytest.mark.parametrize("error, shown", [
    (ValueError("a library's\n    indented\treason  "), "a library's indented reason"), (OSError(), "OSError")])
def test_an_expected_error_is_one_line_and_never_empty(monkeypatch, capsys, error, shown):
    def demo(args):
        raise error
    monkeypatch.setattr("s2s_fast.cli._demo", demo)
    assert main(["demo"]) == 1
    assert capsys.readouterr().err == f"s2s-fast demo: error: {shown}\n"


def test_an_unknown_model_flag_lists_the_valid_fields(tmp_path, capsys):
    code = main(["train", "--output-dir", str(tmp_path / "run"), "--task", "reverse", "--model", "hidden=3"])
    err = capsys.readouterr().err
    assert code == 1 and re.search(r"flags: model: unknown field\(s\) hidden; valid fields: embed_dim, hidden_size, "
                                   r"encoder_layers, .*backend$", err.strip()), err
