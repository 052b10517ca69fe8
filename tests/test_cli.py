"""The command line: help everywhere, the demo end to end on a tiny budget, bad arguments, the train flags."""

import dataclasses
import subprocess
import sys

import pytest

from s2s_fast.cli import build_parser, main
from s2s_fast.train_config import TrainConfig


def test_help_for_every_command(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as info:
            main(["--help"] if name is None else [name, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_demo_runs_and_reports(capsys):
    assert main(["demo", "--seconds", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "held-out exact match" in out and "->" in out


def test_module_entry_point_rejects_unknown_command():
    result = subprocess.run([sys.executable, "-m", "s2s_fast", "fly"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def _train_parser():
    return build_parser()._subparsers._group_actions[0].choices["train"]


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
