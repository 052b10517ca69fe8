"""s2s-fast train / decode / evaluate end to end on tiny budgets, and clear messages for bad input.

Commands run through s2s_fast.cli.main, the console script's entry point, in this process; through python -m
s2s_fast in a subprocess where the environment or a second process matters."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from s2s_fast import allocator
from s2s_fast.checkpoint import find_checkpoint
from s2s_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_TOY = ["--task", "reverse", "--toy-train-size", "300", "--toy-eval-size", "30", "--toy-max-len", "8",
            "--batch-tokens", "160", "--device", "cpu", "--threads", "1", "--progress", "off", "--log-every", "5",
            "--model", "hidden_size=16", "--model", "embed_dim=8"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_toy_train_resume_decode_evaluate_plot(tmp_path, capsys, monkeypatch):
    held = []
    monkeypatch.setattr(allocator, "hold_freed_memory", lambda: held.append(True))
    monkeypatch.setattr(allocator, "_note", "glibc keeps it (a test's note)")
    run = tmp_path / "run"
    config = tmp_path / "settings.yaml"
    config.write_text("max_steps: 6\neval_every: 3\nwarmup_steps: 2\ndecay_steps: 12\nmodel:\n  cell: gru\n")
    code, out, _ = _run(capsys, "train", "--config", config, "--output-dir", run, *TINY_TOY)
    assert code == 0 and "dev step 6" in out
    # train asks s2s_fast.allocator to keep freed memory (stubbed: the real call would change this process's
    # allocator; tests/test_allocator.py runs it), and its log carries the note.
    assert held == [True] and "glibc keeps it (a test's note)" in (run / "train.log").read_text()
    resolved = json.loads((run / "config.json").read_text())
    assert resolved["max_steps"] == 6 and resolved["lr"] == 3e-3 and resolved["model"] == {
        "cell": "gru", "hidden_size": 16, "embed_dim": 8}

    code, out, _ = _run(capsys, "train", "--output-dir", run, "--resume", "--max-steps", 12)
    assert code == 0 and "resumed from" in out and "done: step 12" in out
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 12
    assert json.loads((run / "config.json").read_text())["model"]["cell"] == "gru"

    inputs = tmp_path / "inputs.txt"
    inputs.write_text("1 2 3\n4 5 6 7\n")
    plots = tmp_path / "plots"
    code, out, err = _run(capsys, "decode", run, "--input", inputs, "--beam-size", 3, "--n-best", 2,
                          "--attention-plot", plots, "--device", "cpu")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and [line.split("\t")[0] for line in lines] == ["1", "1", "2", "2"]
    assert all(re.fullmatch(r"\d\t-?\d+\.\d{4}\t[\d ]*", line) for line in lines)
    assert sorted(p.name for p in plots.iterdir()) == ["00001.png", "00002.png"]
    assert (plots / "00001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    monkeypatch.setattr(sys, "stdin", io.StringIO("3 1\n"))
    output = tmp_path / "out.txt"
    code, out, _ = _run(capsys, "decode", run, "--beam-size", 1, "--output", output, "--device", "cpu")
    assert code == 0 and out == "" and len(output.read_text().splitlines()) == 1
    written = json.loads(Path(f"{output}.config.json").read_text())
    assert written["beam_size"] == 1 and written["which_checkpoint"] == "best"
    assert Path(written["checkpoint"]) == find_checkpoint(run, "best")

    code, out, _ = _run(capsys, "evaluate", run, "--split", "test", "--beam-size", 2, "--device", "cpu")
    assert code == 0 and re.search(r"reverse test: accuracy \d+\.\d\d%  token error \d+\.\d\d%", out)
    assert list((run / "evaluations").glob("test-*-beam2.json"))


def test_g2p_train_and_evaluate_print_wer_and_per(tmp_path, capsys):
    run = tmp_path / "g2p"
    code, out, _ = _run(capsys, "train", "--task", "g2p", "--output-dir", run, "--max-steps", 3, "--device", "cpu",
                        "--eval-every", 3, "--eval-max-examples", 50, "--threads", "1", "--progress", "off",
                        "--model", "hidden_size=16", "--model", "embed_dim=8", "--model", "encoder_layers=1")
    assert code == 0 and re.search(r"dev step 3: WER \d+\.\d\d%  PER \d+\.\d\d%", out)
    code, out, _ = _run(capsys, "evaluate", run, "--split", "test", "--max-examples", 40, "--beam-size", 2,
                        "--device", "cpu")
    assert code == 0 and re.search(r"^g2p test: WER \d+\.\d\d%  PER \d+\.\d\d%  \(40 examples", out)
    code, out, _ = _run(capsys, "decode", run, "--device", "cpu", "--input", _lines(tmp_path / "w", ["Hello"]))
    assert code == 0 and re.fullmatch(r"[A-Z ]*\n", out)


def _lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_parallel_text_train_and_evaluate_bleu_chrf(tmp_path, capsys):
    sources = [f"the cat {i} sat" for i in range(30)]
    targets = [f"le chat {i} assis" for i in range(30)]
    files = {name: _lines(tmp_path / name, lines) for name, lines in
             (("train.src", sources), ("train.tgt", targets), ("dev.src", sources[:5]), ("dev.tgt", targets[:5]))}
    run = tmp_path / "mt"
    code, out, _ = _run(capsys, "train", "--task", "parallel", "--output-dir", run, "--train-src", files["train.src"],
                        "--train-tgt", files["train.tgt"], "--dev-src", files["dev.src"], "--dev-tgt",
                        files["dev.tgt"], "--spm-vocab-size", 40, "--max-steps", 2, "--eval-every", 2,
                        "--device", "cpu", "--threads", "1", "--progress", "off", "--model", "hidden_size=16",
                        "--model", "embed_dim=8", "--model", "encoder_layers=1")
    assert code == 0 and re.search(r"dev step 2: BLEU \d+\.\d\d  chrF \d+\.\d\d", out)
    assert (run / "checkpoints" / "step-00000002" / "src.spm.model").is_file()
    code, out, _ = _run(capsys, "evaluate", run, "--split", "dev", "--beam-size", 1, "--device", "cpu")
    assert code == 0 and re.search(r"parallel dev: BLEU \d+\.\d\d  chrF \d+\.\d\d", out)
    code, _, err = _run(capsys, "evaluate", run, "--split", "test", "--device", "cpu")
    assert code == 1 and "no test files" in err
    # A character the source model never saw is sentencepiece's piece of its own, read as <unk>: said, not silent.
    inputs = _lines(tmp_path / "in.txt", ["the cat 3 sat", "the \u5bff 4 sat", "\u00e6 cat"])
    code, out, err = _run(capsys, "decode", run, "--input", inputs, "--device", "cpu")
    assert code == 0 and len(out.splitlines()) == 3
    assert "note: 2 input line(s) hold pieces the model's source vocabulary lacks, read as <unk> (line(s) 2, 3)" in err


def test_train_notes_a_given_target_model_that_changes_the_text(tmp_path, capsys):
    from s2s_fast.data.parallel import train_sentencepiece
    sources = [f"the cat {i} sat" for i in range(30)]
    targets = [f"le chat {i} assis…" for i in range(30)]
    files = {name: _lines(tmp_path / name, lines) for name, lines in (("t.src", sources), ("t.tgt", targets))}
    nfkc = train_sentencepiece(targets, tmp_path / "nfkc", 40, "unigram", "nmt_nfkc")
    code, out, _ = _run(capsys, "train", "--task", "parallel", "--output-dir", tmp_path / "mt", "--train-src",
                        files["t.src"], "--train-tgt", files["t.tgt"], "--tgt-spm", nfkc, "--spm-vocab-size", 40,
                        "--max-steps", 1, "--device", "cpu", "--threads", "1", "--progress", "off", "--model",
                        "hidden_size=16", "--model", "embed_dim=8", "--model", "encoder_layers=1")
    assert code == 0, out
    note = f"note: --tgt-spm {nfkc} gives back 30 of the 30 training target lines changed"
    assert note in out and note in (tmp_path / "mt" / "train.log").read_text()


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "parallel", "--output-dir", "{tmp}/r", "--train-src", "{tmp}/nope.src", "--train-tgt",
      "{tmp}/a.tgt"], "nope.src: no such file"),
    (["train", "--task", "parallel", "--output-dir", "{tmp}/r", "--train-src", "{tmp}/a.src", "--train-tgt",
      "{tmp}/short.tgt"], "has 3 lines but .*short.tgt has 2"),
    (["train", "--task", "parallel", "--output-dir", "{tmp}/r", "--train-src", "{tmp}/a.src", "--train-tgt",
      "{tmp}/holes.tgt"], r"holes.tgt:2: empty line"),
    (["train", "--task", "parallel", "--output-dir", "{tmp}/r"], "needs --train-src and --train-tgt"),
    (["train", "--config", "{tmp}/bad_task.yaml", "--output-dir", "{tmp}/r"],
     "bad_task.yaml: task must be one of .*'spelling'"),
    (["train", "--config", "{tmp}/bad_key.json", "--output-dir", "{tmp}/r"], "unknown setting.*learning_rate"),
    (["train", "--config", "{tmp}/missing.yaml"], "missing.yaml: no such config file"),
    (["train", "--task", "reverse"], "output directory is needed"),
    (["train", "--task", "reverse", "--output-dir", "{tmp}/r", "--resume"], "holds no checkpoint"),
    (["train", "--task", "reverse", "--output-dir", "{tmp}/r", "--model", "cell=rnn"], "cell must be one of"),
    (["train", "--task", "reverse", "--output-dir", "{tmp}/r", "--max-steps", "0"], "max_steps must be"),
    (["decode", "{tmp}/no-run"], "no-run: no such directory"),
    (["evaluate", "{tmp}", "--split", "test"], "holds no checkpoint"),
])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, argv, message):
    _lines(tmp_path / "a.src", ["one", "two", "three"])
    _lines(tmp_path / "a.tgt", ["uno", "dos", "tres"])
    _lines(tmp_path / "short.tgt", ["uno", "dos"])
    _lines(tmp_path / "holes.tgt", ["uno", "", "tres"])
    (tmp_path / "bad_task.yaml").write_text("task: spelling\n")
    (tmp_path / "bad_key.json").write_text('{"learning_rate": 0.1}')
    code, _, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 1
    assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_decode_bad_lines_and_unknown_task_flag(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 1, "--eval-every", 0, *TINY_TOY)[0] == 0
    code, _, err = _run(capsys, "decode", run, "--input", _lines(tmp_path / "in", ["1 2", "", "3"]))
    assert code == 1 and "in:2: empty line" in err
    code, _, err = _run(capsys, "decode", run, "--input", _lines(tmp_path / "in2", ["1 2", "1 x 3"]))
    assert code == 1 and "in2:2:" in err and "does not know: x" in err
    code, _, err = _run(capsys, "decode", run, "--input", tmp_path / "absent.txt")
    assert code == 1 and "absent.txt: no such input file" in err
    code, _, err = _run(capsys, "decode", run, "--input", tmp_path)
    assert code == 1 and "a directory, not an input file" in err
    # A pipe (--input <(...), /dev/stdin) was refused as "no such input file"; closed stdin (<&-) was a traceback.
    os.mkfifo(tmp_path / "pipe")
    writer = threading.Thread(target=(tmp_path / "pipe").write_text, args=("1 2\n3 1\n",), daemon=True)
    writer.start()
    code, out, err = _run(capsys, "decode", run, "--input", tmp_path / "pipe", "--beam-size", 1)
    assert code == 0 and len(out.splitlines()) == 2, err
    writer.join(timeout=10)
    assert not writer.is_alive()
    monkeypatch.setattr(sys, "stdin", None)
    code, _, err = _run(capsys, "decode", run)
    assert code == 1 and "stdin is closed" in err and "Traceback" not in err
    code, _, err = _run(capsys, "train", "--output-dir", run, *TINY_TOY)
    assert code == 1 and "already holds a training run" in err
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "spelling", "--output-dir", str(run)])
    assert info.value.code == 2 and "invalid choice: 'spelling'" in capsys.readouterr().err


def test_torchrun_form_the_readme_documents(tmp_path):
    """torchrun --nproc_per_node=2 -m s2s_fast train ..., from the repository root."""
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "s2s_fast",
                             "train", "--output-dir", str(tmp_path / "run"), "--max-steps", "4", "--eval-every", "0",
                             *TINY_TOY], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es)" in result.stdout and "done: step 4" in result.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run(capsys, "train", "--task", "reverse", "--output-dir", tmp_path / "r", "--device", "cuda")
    assert code == 1 and "sees no CUDA GPU" in err and "Traceback" not in err


def _tiny_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 1, "--eval-every", 0, *TINY_TOY)[0] == 0
    return run


def _one_line(code, err, pattern):
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err


def test_every_command_refuses_an_unknown_device_in_one_line(tmp_path, capsys):
    run = _tiny_run(tmp_path, capsys)
    inputs = _lines(tmp_path / "in", ["1 2"])
    for argv in (["train", "--output-dir", tmp_path / "r", "--device", "tpu"], ["decode", run, "--input", inputs,
                 "--device", "tpu"], ["evaluate", run, "--device", "tpu"], ["bench", "--quick", "--device", "tpu"],
                 ["demo", "--device", "tpu", "--seconds", 1]):
        _one_line(*_run(capsys, *argv)[::2], r"error: unknown device 'tpu'; use auto, cpu or cuda")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_demo_on_cuda_without_a_gpu_is_one_line(capsys):
    _one_line(*_run(capsys, "demo", "--device", "cuda", "--seconds", 1)[::2], r"demo: error: .*sees no CUDA GPU")


def test_evaluations_with_other_settings_keep_their_own_files(tmp_path, capsys):
    """A sample (--max-examples) or a length penalty is named in the files' names: no evaluation replaces another."""
    run = _tiny_run(tmp_path, capsys)
    for extra in ([], ["--max-examples", 3], ["--length-penalty", 0.6], ["--max-examples", 10 ** 6],
                  ["--length-penalty", "0.6000001"]):  # the same to :g's six digits
        assert _run(capsys, "evaluate", run, "--split", "dev", "--beam-size", 2, "--device", "cpu", *extra)[0] == 0
    names = sorted(p.name.split("-", 3)[3] for p in (run / "evaluations").glob("dev-step-*.json"))
    assert names == ["beam2-lp0.6.json", "beam2-lp0.6000001.json", "beam2-n3.json", "beam2.json"], names
    report = json.loads(next((run / "evaluations").glob("dev-*-beam2-n3.json")).read_text())
    assert report["examples"] == 3 and report["max_examples"] == 3


def test_evaluate_and_decode_hold_a_matmul_precision_and_name_it(tmp_path, capsys, monkeypatch):
    """--matmul-precision holds while evaluate and decode decode, the process's setting put back after; it is named
    in the evaluation's files, report and summary line and in decode's settings file and note; a precision the
    process set itself is named too; a bad word is refused before any model is read."""
    import torch

    import s2s_fast.evaluate
    import s2s_fast.inference
    from s2s_fast.evaluate import evaluate_run

    run = _tiny_run(tmp_path, capsys)
    seen = []
    translate = s2s_fast.inference.translate

    def recording(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return translate(*args, **kwargs)

    monkeypatch.setattr(s2s_fast.evaluate, "translate", recording)
    monkeypatch.setattr(s2s_fast.inference, "translate", recording)
    code, out, _ = _run(capsys, "evaluate", run, "--split", "dev", "--beam-size", 1, "--device", "cpu",
                        "--matmul-precision", "medium")
    assert code == 0 and seen == ["medium"] and torch.get_float32_matmul_precision() == "highest"
    assert "float32 matmul precision medium (the cpu backend's products in bfloat16: " in out
    report = json.loads(next((run / "evaluations").glob("dev-*-beam1-mpmedium.json")).read_text())
    assert report["matmul_precision"] == "medium" and report["matmul_precision_note"] in out
    assert _run(capsys, "evaluate", run, "--split", "dev", "--beam-size", 1, "--device", "cpu")[0] == 0
    report = json.loads(next((run / "evaluations").glob("dev-*-beam1.json")).read_text())
    assert seen[-1] == "highest" and report["matmul_precision"] == "highest" and "matmul_precision_note" not in report
    torch.set_float32_matmul_precision("high")
    try:
        evaluate_run(run, "dev", beam_size=1)
    finally:
        torch.set_float32_matmul_precision("highest")
    assert seen[-1] == "high" and list((run / "evaluations").glob("dev-*-beam1-mphigh.json"))
    inputs, output = _lines(tmp_path / "in", ["1 2"]), tmp_path / "out.txt"
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--device", "cpu",
                        "--matmul-precision", "high")
    assert code == 0 and seen[-1] == "high" and torch.get_float32_matmul_precision() == "highest"
    assert "note: float32 matmul precision high" in err
    assert json.loads(Path(f"{output}.config.json").read_text())["matmul_precision"] == "high"
    count = len(seen)
    with pytest.raises(ValueError, match="matmul precision must be one of highest, high, medium, got 'low'"):
        evaluate_run(tmp_path / "no-such-run", "dev", matmul_precision="low")
    assert len(seen) == count and torch.get_float32_matmul_precision() == "highest"


def test_decode_output_is_whole_or_untouched_and_dash_is_stdout(tmp_path, capsys, monkeypatch):
    """--output - wrote files named "-" and "-.config.json"; a write cut short (a full disk) left the output
    truncated beside the earlier run's settings file, and the error did not name the file."""
    import s2s_fast.files

    run = _tiny_run(tmp_path, capsys)
    inputs, output = tmp_path / "in.txt", tmp_path / "out.txt"
    inputs.write_text("1 2 3\n3 1\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "decode", run, "--input", inputs, "--output", "-", "--device", "cpu")
    assert code == 0 and len(out.splitlines()) == 2 and not (tmp_path / "-").exists()
    assert not (tmp_path / "-.config.json").exists()
    assert _run(capsys, "decode", run, "--input", inputs, "--output", output, "--device", "cpu")[0] == 0
    before = {path: path.read_bytes() for path in (output, Path(f"{output}.config.json"))}

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(s2s_fast.files.os, "replace", full_disk)
    inputs.write_text("3 3 3\n")
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--beam-size", 1,
                        "--device", "cpu")
    _one_line(code, err, rf"decode: error: \[Errno 28\] {output}: not written \(No space left on device\)")
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    code, _, err = _run(capsys, "evaluate", run, "--split", "dev", "--device", "cpu")
    _one_line(code, err, r"evaluate: error: \[Errno 28\] .*evaluations/dev-step-\d+-beam5.hyp: not written")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    # The output and its settings are a pair: the settings' write failing leaves both as they were.
    staged = s2s_fast.files._staged

    def settings_fail(target, text):
        if target.name.endswith(".config.json"):
            raise OSError(28, "No space left on device")
        return staged(target, text)

    monkeypatch.setattr(s2s_fast.files, "_staged", settings_fail)
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--beam-size", 1,
                        "--device", "cpu")
    _one_line(code, err, r"out.txt.config.json: not written")
    assert {path: path.read_bytes() for path in before} == before
    monkeypatch.undo()
    # A symbolic link is written through, and a file keeps its mode.
    real, link = tmp_path / "real.txt", tmp_path / "link.txt"
    real.write_text("old\n")
    real.chmod(0o600)
    link.symlink_to(real)
    assert _run(capsys, "decode", run, "--input", inputs, "--output", link, "--device", "cpu")[0] == 0
    assert link.is_symlink() and real.read_text() != "old\n" and real.stat().st_mode & 0o777 == 0o600


def test_decode_checks_its_plot_folder_and_files_before_it_decodes(tmp_path, capsys, monkeypatch):
    """--attention-plot "" wrote the plots into the current folder; a plot path that was a file failed after the
    output was written; a second decode into one folder replaced its plots and left the first one's extra ones.
    An empty --output or --input was read as standard output or input."""
    run = _tiny_run(tmp_path, capsys)
    inputs, output = _lines(tmp_path / "in.txt", ["1 2", "3 1"]), tmp_path / "out.txt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plotfile").write_text("mine\n")
    for argv, pattern in ((["--attention-plot", ""], r"--attention-plot is empty"),
                          (["--attention-plot", "plotfile"], r"--attention-plot: plotfile exists and is not a folder"),
                          (["--output", ""], r"--output is empty"), (["--input", " "], r"--input is empty")):
        argv = ["--input", inputs, *argv] if "--input" not in argv else argv
        _one_line(*_run(capsys, "decode", run, "--output", output, *argv, "--device", "cpu")[::2], pattern)
        assert not output.exists() and not list(tmp_path.glob("*.png"))
    assert (tmp_path / "plotfile").read_text() == "mine\n"
    plots = tmp_path / "plots"
    code, out, err = _run(capsys, "decode", run, "--input", inputs, "--attention-plot", plots, "--device", "cpu")
    assert code == 0 and sorted(p.name for p in plots.iterdir()) == ["00001.png", "00002.png"], err
    before = (plots / "00001.png").read_bytes()
    code, _, err = _run(capsys, "decode", run, "--input", _lines(tmp_path / "one.txt", ["3"]), "--attention-plot",
                        plots, "--device", "cpu")
    _one_line(code, err, r"--attention-plot: .*plots holds plots already \(00001.png, 2 in all\); give a new or "
                         r"empty folder")
    assert (plots / "00001.png").read_bytes() == before
    # An --output that cannot be written is refused before the work (it failed after every input was decoded).
    (tmp_path / "afile").write_text("mine\n")
    for target, pattern in ((tmp_path / "missing" / "out.txt", r"--output: .*missing is not a folder"),
                            (tmp_path / "afile" / "out.txt", r"--output: .*afile is not a folder"),
                            (plots, r"--output: .*plots is a folder; give a file")):
        _one_line(*_run(capsys, "decode", run, "--input", inputs, "--output", target, "--attention-plot",
                        tmp_path / "unmade", "--device", "cpu")[::2], pattern)
    assert not (tmp_path / "unmade").exists() and not (tmp_path / "missing").exists()
    # A decode that fails after its plot folder was made (here: its first plot) removes the folders it made, while
    # still empty; one that was there stays.
    import s2s_fast.attention_plot

    seen = []

    def fail(*args, **kwargs):
        seen.append(sorted(path.name for path in tmp_path.iterdir()))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(s2s_fast.attention_plot, "plot_attention", fail)
    (tmp_path / "kept").mkdir()
    for folder in (tmp_path / "new" / "deep" / "plots", tmp_path / "kept"):
        code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--attention-plot", folder,
                            "--device", "cpu")
        assert code != 0 and "No space left on device" in err, err
    assert "new" in seen[0]  # made before the work, as the failure found it
    assert not (tmp_path / "new").exists() and (tmp_path / "kept").is_dir()


def test_decode_output_in_a_folder_it_cannot_write(tmp_path, capsys, monkeypatch):
    """In a folder decode cannot write (os.access denies it; CI runs as root, which may write anywhere), --output
    passes only as a file that exists, is writable and has its writable settings file beside it (both are then
    rewritten), or as a FIFO; anything else is refused before the work, in one line."""
    import s2s_fast.cli as cli

    run = _tiny_run(tmp_path, capsys)
    inputs, locked = _lines(tmp_path / "in.txt", ["1 2", "3 1"]), tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode):  # the folder refuses writing; its files answer for themselves
        return False if Path(path) == locked and mode & os.W_OK else real_access(path, mode)

    monkeypatch.setattr(cli.os, "access", access)
    output, settings = locked / "out.txt", locked / "out.txt.config.json"
    refused = r"--output: cannot write .*out.txt and out.txt.config.json in .*locked \(no write permission\)"
    _one_line(*_run(capsys, "decode", run, "--input", inputs, "--output", output, "--device", "cpu")[::2], refused)
    assert not output.exists()
    output.write_text("old\n")  # the file alone: its settings file could not be made
    _one_line(*_run(capsys, "decode", run, "--input", inputs, "--output", output, "--device", "cpu")[::2], refused)
    assert output.read_text() == "old\n"
    settings.write_text("{}\n")  # both there and writable: rewritten
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--device", "cpu")
    assert code == 0, err
    assert len(output.read_text().splitlines()) == 2 and json.loads(settings.read_text()) != {}
    settings.chmod(0o444)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if Path(path) in (locked, settings) and
                        mode & os.W_OK else real_access(path, mode))
    with pytest.raises(PermissionError, match="no write permission"):
        cli._check_output(str(output))
    fifo = locked / "pipe"
    os.mkfifo(fifo)
    cli._check_output(str(fifo))  # a FIFO (or device) is written where it is


def test_runs_decoded_as_one(tmp_path, capsys):
    """One run given twice made a silent ensemble of a model with itself; a run without attention in an ensemble
    was reported as "this model has no attention"; a file given as a run was told to train into it."""
    run = _tiny_run(tmp_path, capsys)
    plain = tmp_path / "plain"
    assert _run(capsys, "train", "--output-dir", plain, "--max-steps", 1, "--eval-every", 0, *TINY_TOY, "--model",
                "attention=none")[0] == 0
    inputs = _lines(tmp_path / "in.txt", ["1 2"])
    checkpoint = find_checkpoint(run, "last")
    for twice in ([run, run], [run, checkpoint], [checkpoint, tmp_path / "." / "run"]):
        _one_line(*_run(capsys, "evaluate", *twice, "--split", "dev", "--device", "cpu")[::2],
                  r"name one checkpoint .*: a model with itself decodes as the model alone; give each run once")
    for runs in ([run, plain], [plain, run]):
        code, _, err = _run(capsys, "decode", *runs, "--input", inputs, "--attention-plot", tmp_path / "p",
                            "--device", "cpu")
        _one_line(code, err, rf"--attention-plot: {re.escape(str(find_checkpoint(plain)))} has no attention "
                             r"\(attention='none'\); the plots show the mean attention")
    _one_line(*_run(capsys, "evaluate", inputs, "--device", "cpu")[::2],
              r"in.txt: a file, not a training output directory or a checkpoint directory")


def test_decode_and_evaluate_replace_the_backend_a_run_was_saved_with(tmp_path, capsys):
    """A run trained with --model backend=cpu decoded only where the cpu backend runs (not on a GPU), with no way to
    choose another."""
    from s2s_fast import backends
    from s2s_fast.checkpoint import load_checkpoint, open_models

    if backends.unavailable_reason("cpu", "cpu") is not None:
        pytest.skip("the cpu backend is not built here")
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 2, "--eval-every", 0, "--save-every", 1,
                "--keep-checkpoints", 2, *TINY_TOY, "--model", "backend=cpu")[0] == 0
    checkpoint = find_checkpoint(run)
    assert load_checkpoint(checkpoint)[0].config.backend == "cpu"
    assert load_checkpoint(checkpoint, backend="reference")[0].config.backend == "reference"
    assert load_checkpoint(checkpoint, backend="auto")[0].config.backend is None
    for average in (1, 2):
        model = open_models([run], "last", average=average, backend="reference")[1]
        assert model.config.backend == "reference" and model.attention.backend == "reference"
    _one_line(*_run(capsys, "evaluate", run, "--backend", "aten", "--device", "cpu")[::2],
              r"--backend aten cannot run the model of .*step-00000002: it does not implement additive_attention"
              r"[^;]*; use --backend auto, or one that serves them all: .*cpu, reference$")
    inputs, output = _lines(tmp_path / "in.txt", ["1 2"]), tmp_path / "out.txt"
    code, _, err = _run(capsys, "decode", run, "--input", inputs, "--output", output, "--backend", "reference",
                        "--device", "cpu")
    assert code == 0, err
    assert json.loads(Path(f"{output}.config.json").read_text())["backend"] == "reference"
    assert _run(capsys, "evaluate", run, "--split", "dev", "--backend", "auto", "--device", "cpu")[0] == 0
    assert _run(capsys, "evaluate", run, "--split", "dev", "--device", "cpu")[0] == 0
    reports = {path.name: json.loads(path.read_text()) for path in (run / "evaluations").glob("dev-*.json")}
    assert sorted(reports) == ["dev-step-00000002-beam5-beauto.json", "dev-step-00000002-beam5.json"], reports
    assert reports["dev-step-00000002-beam5-beauto.json"]["backend"] == "auto"


def test_evaluate_refuses_a_folder_for_its_files_it_cannot_make_before_decoding(tmp_path, capsys, monkeypatch):
    import s2s_fast.evaluate

    run = _tiny_run(tmp_path, capsys)
    (run / "evaluations").write_text("not a folder\n")
    monkeypatch.setattr(s2s_fast.evaluate, "score_items", lambda *args: pytest.fail("decoded before the check"))
    _one_line(*_run(capsys, "evaluate", run, "--split", "dev", "--device", "cpu")[::2],
              r"evaluations: cannot make the folder for the evaluation's files")


def test_checkpoint_choice_with_a_checkpoint_directory_is_refused(tmp_path, capsys):
    """It names itself: --checkpoint last was accepted and ignored, and decode recorded "last" beside it."""
    run = _tiny_run(tmp_path, capsys)
    checkpoint = find_checkpoint(run, "last")
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2\n")
    for command in (["decode", "--input", inputs], ["evaluate"]):
        code, _, err = _run(capsys, command[0], checkpoint, *command[1:], "--checkpoint", "last", "--device", "cpu")
        _one_line(code, err, rf"--checkpoint last picks a run's checkpoint, and {checkpoint} is a checkpoint "
                             "directory itself")
    output = tmp_path / "out.txt"
    assert _run(capsys, "decode", checkpoint, "--input", inputs, "--output", output, "--device", "cpu")[0] == 0
    written = json.loads(Path(f"{output}.config.json").read_text())
    assert written["which_checkpoint"] is None and written["checkpoint"] == str(checkpoint)
    # Beside a run's directory it picks that run's checkpoint (an ensemble of the run and a checkpoint; another
    # run's: one checkpoint named twice is refused).
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert _run(capsys, "decode", copy, checkpoint, "--input", inputs, "--output", output, "--checkpoint", "last",
                "--device", "cpu")[0] == 0
    assert json.loads(Path(f"{output}.config.json").read_text())["which_checkpoint"] == "last"


def test_a_backend_that_cannot_run_here_is_refused_at_load(tmp_path, capsys, monkeypatch):
    """A run pinned to a backend this machine lacks, or a --backend it lacks, is refused when the model loads, before
    evaluate makes its folder or decode its output (the first op refused it, after those were made)."""
    from s2s_fast import backends

    if backends.unavailable_reason("cpu", "cpu") is not None:
        pytest.skip("the cpu backend is not built here")
    run = tmp_path / "run"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 1, "--eval-every", 0, *TINY_TOY,
                "--model", "backend=cpu")[0] == 0
    real = backends._unavailable
    monkeypatch.setattr(backends, "_unavailable",
                        lambda name, device: "not on this machine (test)" if name == "cpu" else real(name, device))
    inputs, output = _lines(tmp_path / "in.txt", ["1 2"]), tmp_path / "out.txt"
    _one_line(*_run(capsys, "evaluate", run, "--split", "dev", "--device", "cpu")[::2],
              rf"{re.escape(str(run))}: its model was saved with backend cpu, which cannot run on cpu here: not on "
              r"this machine \(test\); give --backend auto, or another that runs here: .*aten, reference$")
    _one_line(*_run(capsys, "decode", run, "--input", inputs, "--output", output, "--backend", "cpu",
                    "--device", "cpu")[::2], r"--backend cpu cannot run on cpu here: not on this machine \(test\)$")
    assert not (run / "evaluations").exists() and not output.exists()
    assert _run(capsys, "evaluate", run, "--split", "dev", "--device", "cpu", "--backend", "auto")[0] == 0


def test_numbers_that_are_not_finite_are_refused_in_one_line(tmp_path, capsys):
    run = _tiny_run(tmp_path, capsys)
    inputs = _lines(tmp_path / "in", ["1 2"])
    for value in ("nan", "inf", "1e300"):
        _one_line(*_run(capsys, "decode", run, "--input", inputs, "--beam-size", 2, "--n-best", 2,
                        "--length-penalty", value, "--device", "cpu")[::2], r"length_penalty must be a number in")
    _one_line(*_run(capsys, "decode", run, "--input", inputs, "--beam-size", 1, "--length-penalty", 0.6,
                    "--device", "cpu")[::2], r"greedy search \(beam_size 1\) has one, so it would change nothing")
    for value in ("nan", "inf", "0"):
        _one_line(*_run(capsys, "demo", "--seconds", value, "--device", "cpu")[::2],
                  r"demo: error: demo: seconds must be a positive number")


def test_a_bench_filter_that_is_not_a_regular_expression_is_one_line(capsys):
    _one_line(*_run(capsys, "bench", "--quick", "--device", "cpu", "--filter", "(")[::2],
              r"--filter '\(' is not a regular expression: missing \)")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the triton backend runs where there is a GPU")
def test_a_backend_that_cannot_run_here_is_one_line_through_the_console_script(tmp_path, capsys):
    """python -m s2s_fast (the console script's entry point) in a clean environment: no Triton interpreter, no
    CUDA emulation, so S2S_FAST_BACKEND=triton cannot serve the model's ops on the CPU."""
    import os

    run = _tiny_run(tmp_path, capsys)
    env = {key: value for key, value in os.environ.items() if key not in ("TRITON_INTERPRET", "S2S_FAST_CUDA_EMULATE")}
    result = subprocess.run([sys.executable, "-m", "s2s_fast", "decode", str(run), "--device", "cpu"], cwd=ROOT,
                            input="1 2\n", capture_output=True, text=True, timeout=120,
                            env={**env, "S2S_FAST_BACKEND": "triton", "PYTHONPATH": str(ROOT)})
    _one_line(result.returncode, result.stderr, r"decode: error: backend 'triton' cannot serve .* on cpu: Triton "
                                                r"kernels run on CUDA devices")


def test_input_that_is_not_utf8_is_named(tmp_path, capsys, monkeypatch):
    run = _tiny_run(tmp_path, capsys)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"1 2\n\xff\xfe 3\n")
    _one_line(*_run(capsys, "decode", run, "--input", binary)[::2], rf"{binary}: not UTF-8 text \(invalid start byte "
                                                                      r"at byte 4\)")
    for errors in ("strict", "surrogateescape"):  # surrogateescape: stdin's under the C.UTF-8 locale
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"1 2\n\xff\n"), encoding="utf-8",
                                                           errors=errors))
        _one_line(*_run(capsys, "decode", run)[::2], r"stdin: not UTF-8 text \(invalid start byte at byte 4\)")
    config = tmp_path / "latin1.yaml"
    config.write_bytes("task: r\xe9verse\n".encode("latin-1"))
    _one_line(*_run(capsys, "train", "--config", config, "--output-dir", tmp_path / "r")[::2],
              rf"{config}: not UTF-8 text")


def test_one_output_line_per_input_line_whatever_the_lines_hold(tmp_path, capsys, monkeypatch):
    """Lines break at "\\n" only (a "\\r" before it dropped), as wc -l counts them: not at the form feed, U+2028,
    U+0085 or lone "\\r" str.splitlines breaks at, which put more outputs than inputs. A leading byte-order mark is
    not a symbol."""
    run = _tiny_run(tmp_path, capsys)
    inputs = tmp_path / "inputs.txt"
    inputs.write_bytes("\ufeff1 2\r\n3 4\n".encode())
    code, out, err = _run(capsys, "decode", run, "--input", inputs, "--beam-size", 1, "--device", "cpu")
    assert code == 0 and len(out.splitlines()) == 2, err
    for separator in ("\u2028", "\x0c", "\x85", "\r"):
        inputs.write_text(f"1 2{separator}3\n4 5\n", encoding="utf-8", newline="")
        code, out, err = _run(capsys, "decode", run, "--input", inputs, "--beam-size", 1, "--device", "cpu")
        # (The toy task splits its tokens at any whitespace: "1 2<separator>3" is three symbols it knows.)
        assert code == 0 and len(out.splitlines()) == 2, (repr(separator), out, err)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"1 2{separator}3\n".encode()),
                                                           encoding="utf-8", newline=""))
        code, out, err = _run(capsys, "decode", run, "--beam-size", 1, "--device", "cpu")
        assert code == 0 and len(out.splitlines()) == 1, (repr(separator), out, err)


def test_a_multi_line_error_is_printed_on_one_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("max_steps: [1,\n")
    _one_line(*_run(capsys, "train", "--config", config, "--output-dir", tmp_path / "r")[::2],
              rf"{config}: not valid YAML: .*line 2")


def test_an_unexpected_error_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    """A bug is not a user's mistake: it is not turned into one line."""
    import s2s_fast.inference

    run = _tiny_run(tmp_path, capsys)

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(s2s_fast.inference, "translate", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["decode", str(run), "--input", str(_lines(tmp_path / "in", ["1 2"]))])


def test_the_command_line_writes_utf8_under_an_ascii_locale():
    """evaluate and decode of a model whose text is not ASCII failed under LC_ALL=C after decoding everything."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONIOENCODING": ""}
    out = subprocess.run([sys.executable, "-c", "from s2s_fast.cli import _utf8_output\n_utf8_output()\n"
                          "print('\\u6211\\u7231')"], env=env, capture_output=True, check=True).stdout
    assert out == "我爱\n".encode("utf-8")
