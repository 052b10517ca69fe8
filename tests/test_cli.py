"""The command line: help everywhere, the demo end to end on a tiny budget, bad arguments."""

import subprocess
import sys

import pytest

from s2s_fast.cli import build_parser, main


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
