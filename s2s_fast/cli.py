"""The s2s-fast command line (also ``python -m s2s_fast``)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(task=args.task, seconds=args.seconds, device=args.device)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
