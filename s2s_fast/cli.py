"""The s2s-fast command line (also ``python -m s2s_fast``): train, decode, evaluate, demo, bench.

Exit status, the same for every command: 0 on success; 1 when the command stops on an error in what it was given
(missing or damaged files, misaligned data, bad settings, a backend that cannot run here, a benchmark filter that
is not a regular expression or matches nothing, a training loss that is no longer finite), after one line on stderr
(set S2S_FAST_DEBUG=1 to see the traceback instead); 2 when the command line itself does not parse (argparse's usage
error); 130 on SIGINT (Ctrl-C) and 143 on SIGTERM (train saves a checkpoint first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import typing
from pathlib import Path

from .backends import MATMUL_PRECISIONS, VALID_NAMES, BackendError
from .data import SPLITS
from .files import one_line

# What a command stops on after one line: errors in what it was given (files, settings, inputs, a backend that
# cannot run here) and a training run whose loss stopped being finite. Any other exception is a bug: its traceback
# shows.
EXPECTED_ERRORS = (ValueError, OSError, BackendError, FloatingPointError)


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(task=args.task, seconds=args.seconds, device=args.device)
    return 0


def _parse_model_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a Seq2SeqConfig field), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def _shown(value) -> str:
    """A setting's value as the help writes it."""
    if value is None or value == {}:
        return "none"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _setting_help(spec: dataclasses.Field) -> str:
    """The field's help text followed by its default: the dataclass's (what None means, where the field says), or
    each task's for a task-dependent one."""
    from .train_config import TOY, default_of

    task_defaults = spec.metadata["task_defaults"]
    if task_defaults:
        default = ", ".join(f"{'toy tasks' if task == TOY else task}: {_shown(value)}"
                            for task, value in task_defaults.items())
    else:
        default = default_of(spec)
        default = spec.metadata["unset"] if default is None and spec.metadata["unset"] else _shown(default)
    return f"{spec.metadata['help']} (default {default})"


def _setting_flag(spec: dataclasses.Field) -> dict:
    """argparse's options for the flag of a TrainConfig field, from its annotation and metadata."""
    from .train_config import default_of, setting_type

    options = dict(help=_setting_help(spec), metavar=spec.metadata["metavar"], choices=spec.metadata["choices"])
    kind = setting_type(spec)
    if kind is dict:
        options.update(type=_parse_model_override, action="append")
    elif typing.get_origin(kind) is list:
        options.update(type=typing.get_args(kind)[0], nargs=len(default_of(spec)))
    else:
        options.update(type=kind)
    return options


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --resume, and a flag per TrainConfig field (--max-steps for max_steps), grouped by section."""
    from .train_config import SETTINGS

    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON file of settings (names as below, with - or _); flags win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --output-dir that holds one, deleting that run's checkpoints, "
                        "logs and evaluations")
    sections = {}
    for spec in SETTINGS:
        section = spec.metadata["section"]
        if section not in sections:
            sections[section] = parser.add_argument_group(section)
        sections[section].add_argument(f"--{spec.name.replace('_', '-')}", **_setting_flag(spec))


def _train(args) -> int:
    from .allocator import hold_freed_memory
    from .train import train
    from .train_config import TrainConfig, read_config_file, read_settings

    hold_freed_memory()
    explicit = read_settings(read_config_file(args.config), args.config) if "config" in args else {}
    flags = {key: value for key, value in vars(args).items() if key not in ("handler", "command", "config",
                                                                             "resume", "overwrite")}
    if "model" in flags:
        flags["model"] = {**explicit.get("model", {}), **dict(flags["model"])}
    explicit.update(flags)
    config = TrainConfig.from_dict(explicit, "flags")
    train(config, resume=getattr(args, "resume", False), explicit=explicit,
          overwrite=getattr(args, "overwrite", False))
    return 0


def _read_inputs(path: str | None) -> tuple[list[str], str]:
    """(the input lines of ``path``, or of stdin for None or "-"; the name errors give them)."""
    from .files import decode_text, read_text, text_lines

    if path is None or path == "-":
        # The bytes, decoded here: sys.stdin's text layer would let bytes that are not UTF-8 through as surrogates.
        name = "stdin"
        if sys.stdin is None:  # started with standard input closed (<&-)
            raise ValueError("stdin is closed: give the inputs with --input FILE, or on standard input")
        stream = getattr(sys.stdin, "buffer", None)
        lines = text_lines(decode_text(stream.read(), name) if stream is not None else sys.stdin.read())
    else:
        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(f"{path}: no such input file")
        if file.is_dir():
            raise IsADirectoryError(f"{path}: a directory, not an input file")
        # A regular file, or a pipe read once (--input <(...), /dev/stdin).
        lines, name = text_lines(read_text(file)), path
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{name}:{number}: empty line (one input per line)")
    if not lines:
        raise ValueError(f"{name}: no input lines")
    return lines, name


def _encode_inputs(task, lines: list[str], name: str) -> list[list[int]]:
    """The source ids of each input line; a line the task refuses is named, and lines read with the unknown symbol
    (sentencepiece's pieces outside the vocabulary, in parallel text) get a note on stderr."""
    from .data.vocab import UNK

    sources, unknown = [], []
    for number, line in enumerate(lines, 1):
        try:
            sources.append(task.encode_source(line))
        except ValueError as error:
            raise ValueError(f"{name}:{number}: {error}") from None
        if task.src_vocab.unk_id in sources[-1]:
            unknown.append(str(number))
    if unknown:
        print(f"note: {len(unknown)} input line(s) hold pieces the model's source vocabulary lacks, read as {UNK} "
              f"(line(s) {', '.join(unknown[:10])}{', ...' if len(unknown) > 10 else ''})", file=sys.stderr)
    return sources


def _decode(args) -> int:
    from .backends import resolve_device
    from .checkpoint import open_models

    device = resolve_device(args.device)
    for flag, value in (("--input", args.input), ("--output", args.output)):
        if value is not None and not value.strip():
            raise ValueError(f"{flag} is empty: give a file, or leave {flag} out for standard "
                             f"{'input' if flag == '--input' else 'output'}")
    _check_output(args.output)
    plot_dir = _plot_directory(args.attention_plot)  # before the work, which a bad folder would throw away
    checkpoints, model, task, averaged = open_models(args.run, args.checkpoint, device, average=args.average,
                                                     backend=args.backend)
    _note_uneven_averages(averaged)
    lines, input_name = _read_inputs(args.input)
    sources = _encode_inputs(task, lines, input_name)
    if plot_dir is not None and model.attention is None:
        raise ValueError(f"--attention-plot: {_without_attention(checkpoints)}")
    with _made_folder(plot_dir):  # the last check, before the work: a folder made (and removed if the work fails)
        return _decode_and_write(args, device, model, task, checkpoints, averaged, lines, sources, plot_dir)


def _decode_and_write(args, device, model, task, checkpoints, averaged, lines, sources, plot_dir) -> int:
    """decode's work, once everything is checked: ``sources`` (the encoded ``lines``) decoded to --output (with its
    settings) or stdout, then the attention plots into ``plot_dir`` (None: no plots)."""
    import torch

    from .attention_plot import plot_attention
    from .backends import float32_matmul_precision, matmul_precision_record
    from .checkpoint import averaged_record, is_checkpoint
    from .files import write_files_atomic
    from .inference import translate

    want_attention = plot_dir is not None
    with torch.no_grad(), float32_matmul_precision(args.matmul_precision):
        precision, note = matmul_precision_record(device)
        hypotheses, attentions = translate(model, sources, beam_size=args.beam_size,
                                           length_penalty=args.length_penalty, n_best=args.n_best,
                                           ctc_weight=args.ctc_weight,
                                           batch_tokens=args.batch_tokens, return_attention=want_attention)
    out_lines = []
    for index, hypothesis in enumerate(hypotheses):
        if args.n_best == 1:
            out_lines.append(task.target_text(hypothesis))
        else:
            out_lines.extend(f"{index + 1}\t{score:.4f}\t{task.target_text(tokens)}" for tokens, score in hypothesis)
    text = "".join(line + "\n" for line in out_lines)
    if args.output and args.output != "-":
        # The checkpoint(s) decoded, after the flags: --checkpoint's "best" or "last" must not hide which one it was.
        names = [str(c) for c in checkpoints]
        settings = {**{k: v for k, v in vars(args).items() if k != "handler"},
                    "checkpoint": names[0] if len(names) == 1 else names,
                    "which_checkpoint": None if all(map(is_checkpoint, args.run)) else args.checkpoint or "best",
                    "matmul_precision": precision}
        if args.average > 1:
            settings["averaged"] = averaged_record(averaged)
        # The output and its settings as a pair: both written, or neither. A FIFO or device (/dev/stdout) gets the
        # output alone.
        output = Path(args.output)
        files = {output: text}
        if not output.exists() or output.is_file():
            files[Path(f"{args.output}.config.json")] = json.dumps(settings, indent=1) + "\n"
        write_files_atomic(files)
    else:
        sys.stdout.write(text)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if want_attention:
        for index, (line, weights) in enumerate(zip(lines, attentions)):
            best = hypotheses[index] if args.n_best == 1 else hypotheses[index][0][0]
            plot_attention(weights, task.source_tokens(line), task.target_tokens(best),
                           plot_dir / f"{index + 1:05d}.png", title=line.strip()[:60])
        print(f"attention plots: {len(lines)} PNG file(s) in {plot_dir}", file=sys.stderr)
    return 0


def _check_output(value: str | None) -> None:
    """Refuse, before the work, a --output file that could not be written: one that is a folder, or whose folder is
    missing, not a folder, or not writable (unless the file and its settings file exist and are writable, or it is a
    FIFO or device); decode wrote its output only after decoding every input."""
    if not value or value == "-":
        return
    output = Path(value)
    if output.is_dir():
        raise IsADirectoryError(f"--output: {output} is a folder; give a file")
    folder = output.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--output: {folder} is not a folder (it does not exist, or is a file)")
    if os.access(folder, os.W_OK | os.X_OK) or (output.exists() and not output.is_file()):  # a FIFO, a device
        return
    settings = Path(f"{value}.config.json")  # written beside a file: in place, in a folder it cannot write
    if not all(path.is_file() and os.access(path, os.W_OK) for path in (output, settings)):
        raise PermissionError(f"--output: cannot write {output} and {settings.name} in {folder} (no write permission)")


PLOT_NAME = re.compile(r"\d{5}\.png")


@contextlib.contextmanager
def _made_folder(folder: Path | None):
    """Make ``folder`` and its missing parents (None: nothing); when the body fails, remove those it made that are
    still empty, so that a decode that failed leaves no empty plot folder behind."""
    if folder is None:
        yield
        return
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for path in made:
            try:
                if path.exists():  # not made, when the mkdir itself failed on the way down
                    path.rmdir()  # only if empty
            except OSError:
                break
        raise


def _plot_directory(value: str | None) -> Path | None:
    """--attention-plot's folder (made by the caller once everything else is checked), or None: refused when empty,
    when it names something that is not a folder, or when it holds a decode's plots already (one per input,
    00001.png on: a second decode would replace them, and leave those past its own inputs beside its own)."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError("--attention-plot is empty: give the folder the plots go in")
    folder = Path(value)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--attention-plot: {folder} exists and is not a folder")
    if folder.is_dir():
        earlier = sorted(path.name for path in folder.iterdir() if PLOT_NAME.fullmatch(path.name))
        if earlier:
            raise FileExistsError(f"--attention-plot: {folder} holds plots already ({earlier[0]}, {len(earlier)} in "
                                  "all); give a new or empty folder, or move them away")
    return folder


def _without_attention(checkpoints: list[Path]) -> str:
    """Why a decode of ``checkpoints`` has no attention to plot: the runs that lack it, among those whose attention
    is plotted (the first run's writing direction: an ensemble plots its members' mean)."""
    from .checkpoint import MODEL_CONFIG
    from .files import read_json

    configs = [read_json(checkpoint / MODEL_CONFIG) for checkpoint in checkpoints]
    plotted = [(checkpoint, config) for checkpoint, config in zip(checkpoints, configs)
               if config.get("reverse_target") == configs[0].get("reverse_target")]
    lacking = [str(checkpoint) for checkpoint, config in plotted if config.get("attention") == "none"]
    if len(checkpoints) == 1:
        return "this model has no attention (attention='none')"
    return (f"{', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no attention (attention='none'); the "
            "plots show the mean attention of the runs that write in the first run's direction, and each of them must "
            "have one: leave those without out of this decode")


def _note_uneven_averages(averaged: list[list[Path]]) -> None:
    from .checkpoint import pruned_between

    for run in averaged:
        note = pruned_between(run)
        if note is not None:
            print(f"note: {note}", file=sys.stderr)


def _evaluate(args) -> int:
    from .backends import resolve_device
    from .checkpoint import averaged_lists, run_directory
    from .evaluate import evaluate_run

    report = evaluate_run(args.run, args.split, checkpoint=args.checkpoint, beam_size=args.beam_size,
                          length_penalty=args.length_penalty, ctc_weight=args.ctc_weight,
                          max_examples=args.max_examples,
                          batch_tokens=args.batch_tokens, device=resolve_device(args.device), average=args.average,
                          matmul_precision=args.matmul_precision, backend=args.backend)
    if isinstance(report["checkpoint"], list):
        members = ", ".join(f"{run_directory(Path(c)).name}/{Path(c).name}" for c in report["checkpoint"])
        model = (f"both directions, {len(report['checkpoint'])} models (each direction proposes, both score)"
                 if report["joint"] == "both directions" else f"ensemble of {len(report['checkpoint'])}")
        model += f": {members}"
    else:
        model = Path(report["checkpoint"]).name
    if args.average > 1:
        averaged = averaged_lists(report["averaged"])
        _note_uneven_averages(averaged)
        model += ", " + "; ".join(f"the average of {', '.join(c.name for c in run)}" for run in averaged)
    precision = f", {report['matmul_precision_note']}" if "matmul_precision_note" in report else ""
    print(f"{report['task']} {report['split']}: {report['summary']}  ({report['examples']} examples, beam "
          f"{report['beam_size']}, {model}{precision}, {report['seconds']:.0f} s)")
    print(f"details: {report['files']}", file=sys.stderr)
    return 0


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="DIR", nargs="+",
                        help="a training output directory (or a checkpoint directory); several runs of one task "
                             "decode as one ensemble (their log-probabilities averaged at every step); runs trained "
                             "right to left (--model reverse_target=true) among left-to-right ones: each direction "
                             "proposes its beam's hypotheses and both score them all")
    parser.add_argument("--checkpoint", choices=("best", "last"),
                        help="which checkpoint of DIR, a training output directory (default: best on dev, else last)")
    parser.add_argument("--average", type=int, default=1, metavar="N",
                        help="average the weights of N checkpoints of DIR: the one --checkpoint names and the N-1 "
                             "before it on disk (train with --keep-checkpoints N to keep them) (default 1)")
    parser.add_argument("--beam-size", type=int, default=5, help="1 is greedy search (default 5)")
    parser.add_argument("--length-penalty", type=float, default=0.0, help="GNMT length penalty alpha (default 0)")
    parser.add_argument("--ctc-weight", type=float, default=0.0, metavar="W",
                        help="rank the hypotheses the beam proposes by (1 - W) x the decoders' log-probability + W "
                             "x the CTC heads' (runs trained with --model ctc_weight=...) (default 0)")
    parser.add_argument("--batch-tokens", type=int, default=6000, help="source tokens per decoding batch")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    parser.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS,
                        help="torch.set_float32_matmul_precision while decoding: medium lets float32 matrix products "
                             "run in bfloat16 (see train's --matmul-precision) (default as the process has it, "
                             "torch's default highest)")
    parser.add_argument("--backend", choices=VALID_NAMES,
                        help="the kernels to decode with, in place of the backend each run's model was saved with "
                             "(--model backend=...): auto picks per op (default: the runs' own)")


def _bench(args) -> int:
    from .bench import run_benchmarks

    providers = None if args.providers is None else args.providers.split(",")
    if providers is not None and not all(name.strip() for name in providers):
        raise ValueError(f"bench: --providers {args.providers!r} names an empty provider")
    if not args.output_dir:
        raise ValueError("bench: --output-dir is empty")
    run_benchmarks(quick=args.quick, device=args.device, output_dir=args.output_dir, dtype=args.dtype,
                   pattern=args.filter, providers=providers, time_limit_s=args.time_limit, threads=args.threads,
                   matmul_precision=args.matmul_precision)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s-fast", description="Fast LSTM/GRU Seq2Seq models with attention.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="train a small model on a toy task for about a minute",
                               description="Train a small attention Seq2Seq on a toy task and decode examples.")
    demo.add_argument("--task", choices=("copy", "reverse", "sort"), default="reverse")
    demo.add_argument("--seconds", type=float, default=60.0, help="training time budget (default 60)")
    demo.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    demo.set_defaults(handler=_demo)
    bench = commands.add_parser("bench", help="benchmark every backend against the reference, torch.compile, cuDNN",
                                description="Check, then time, every provider of every op and end-to-end case; "
                                            "write results.json, results.md and plots to --output-dir.")
    bench.add_argument("--quick", action="store_true", help="one small size per case (minutes on a CPU)")
    bench.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    bench.add_argument("--output-dir", default="bench-results", help="where results go (default bench-results)")
    bench.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                       help="default bfloat16 on a GPU, float32 on a CPU")
    bench.add_argument("--filter", help="regular expression selecting benchmarks by name")
    bench.add_argument("--providers", help="comma-separated providers to run besides the reference")
    bench.add_argument("--time-limit", type=float, help="seconds after which no new benchmark starts")
    bench.add_argument("--threads", type=int,
                       help="torch's CPU threads in a CPU run (default 1: per-core numbers that hold on a busy machine)")
    bench.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS,
                       help="torch.set_float32_matmul_precision for the run: medium lets float32 products run in "
                            "bfloat16 (on a CPU the cpu backend's, where it has bfloat16 products in hardware), high "
                            "in TF32; float32 results are then checked with that type's tolerances (default as the "
                            "process has it, torch's default highest)")
    bench.set_defaults(handler=_bench)

    train = commands.add_parser("train", help="train a model (g2p, parallel text, toy tasks)",
                                argument_default=argparse.SUPPRESS,
                                usage="%(prog)s [--config FILE] [--resume | --overwrite] [--task TASK] "
                                      "--output-dir DIR [options]",
                                description="Train a Seq2Seq model; settings come from task defaults, --config "
                                "FILE and flags (flags win). Also runs under torchrun --nproc_per_node=N.")
    _add_train_arguments(train)
    train.set_defaults(handler=_train)

    decode = commands.add_parser("decode", help="decode inputs with a trained model",
                                 description="Read inputs (one per line; g2p: one word per line) from a file or "
                                 "stdin and write hypotheses; with --n-best N, N lines 'line<TAB>score<TAB>"
                                 "hypothesis' per input, line its number among the inputs (from 1, as the "
                                 "attention plots' names).")
    _add_decoding_arguments(decode)
    decode.add_argument("--input", metavar="FILE", help="input file (default: stdin)")
    decode.add_argument("--output", metavar="FILE", help="output file, written whole or not at all, with its settings "
                        "in FILE.config.json (default, or -: stdout)")
    decode.add_argument("--n-best", type=int, default=1, help="hypotheses per input, with scores (default 1)")
    decode.add_argument("--attention-plot", metavar="PLOTDIR", help="write an attention heatmap PNG per input, "
                        "PLOTDIR/00001.png on, into a folder that holds no earlier plots")
    decode.set_defaults(handler=_decode)

    evaluate = commands.add_parser("evaluate", help="score a trained model on a split of its task",
                                   description="Decode a split and print the task's metrics (g2p: WER and PER, "
                                   "parallel: BLEU and chrF, toy: accuracy).")
    _add_decoding_arguments(evaluate)
    evaluate.add_argument("--split", choices=SPLITS, default="test", help="(default test)")
    evaluate.add_argument("--max-examples", type=int, help="score an evenly spread subset of the split")
    evaluate.set_defaults(handler=_evaluate)
    parser.command_parsers = commands.choices  # name -> its parser: a command's own usage for its errors
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed; an argument no command knows is refused with that command's usage (argparse's
    parse_args gave the top-level usage, which names no command's options)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.command_parsers[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _utf8_output() -> None:
    """stdout and stderr in UTF-8 whatever the locale: decoded text and error lines quote the data's own characters,
    which the streams of an ASCII locale (LC_ALL=C) refused, after the decoding was done."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    _utf8_output()
    args = parse_arguments(argv)
    try:
        return args.handler(args)
    except EXPECTED_ERRORS as error:
        if os.environ.get("S2S_FAST_DEBUG"):
            raise
        print(f"s2s-fast {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        # Ctrl-C, or train's TrainingInterrupted after it saved a checkpoint: 128 + the signal, as a shell reports.
        signum = getattr(interrupt, "signum", signal.SIGINT)
        print(f"s2s-fast {args.command}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
