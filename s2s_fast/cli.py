"""The s2s-fast command line (also ``python -m s2s_fast``)."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(task=args.task, seconds=args.seconds, device=args.device)
    return 0


def _bench(args) -> int:
    from .bench import run_benchmarks

    providers = args.providers.split(",") if args.providers else None
    try:
        run_benchmarks(quick=args.quick, device=args.device, output_dir=args.output_dir, dtype=args.dtype,
                       pattern=args.filter, providers=providers, time_limit_s=args.time_limit, threads=args.threads)
    except ValueError as error:
        print(f"s2s-fast bench: error: {error}", file=sys.stderr)
        return 2
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
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
