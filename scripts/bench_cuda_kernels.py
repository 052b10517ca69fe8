"""Times the cuda-backend kernels on a GPU against the reference and torch's own (cuDNN / fused) implementations.

Answers the questions the kernels were built on:
- LSTM cell step: recurrent GEMM inside the kernel (s2s_fast::cuda_lstm_cell_fused_fwd, B <= 8) or through cuBLAS with a
  fused pointwise kernel (s2s_fast::cuda_lstm_cell_fwd)? Both are timed at every batch size where they apply; the batch
  threshold (csrc/lstm_cell.h kLstmCellFusedMaxBatch) should sit where the fused path stops winning.
- Persistent LSTM layer vs cuDNN (torch.nn.LSTM) vs the reference time loop, inference and training; the Triton
  layer in both its schedules (one persistent launch, one launch per step), to place
  s2s_fast.triton.utils.PERSISTENT_MAX_WEIGHT_BYTES where the persistent one stops winning; the same for the
  Triton GRU layer against cuDNN (torch.nn.GRU).
- Fused additive attention vs the reference: one decoder step (bytes-bound) and many queries (tanh-bound).

Every row: median time (CUDA events, after warm-up), tokens/s where a token is one (row, step) or (row, query),
peak memory above the inputs, and % of a floor where one applies (bytes / measured copy bandwidth, or tanh count /
an estimate of the special-function rate). Usage: python scripts/bench_cuda_kernels.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch

from s2s_fast import backends, reference
from s2s_fast import functional as F
from s2s_fast.triton import gru_layer as triton_gru_layer
from s2s_fast.triton import lstm_layer as triton_lstm_layer

# Special-function (MUFU) throughput estimate: 16 results per clock per multiprocessor at about 1.98 GHz (H100 SXM).
SFU_RESULTS_PER_CLOCK = 16
CLOCK_HZ = 1.98e9


@dataclasses.dataclass
class Ceilings:
    """The rates floors are computed from: measured copy bandwidth, estimated tanh rate."""

    bandwidth: float  # bytes/s, read + write
    tanh_rate: float  # tanh/s


def median_ms(fn, warmup: int = 5, repeat: int = 30) -> float:
    """Median of per-call times measured with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_median_ms(fn, repeat: int = 30) -> float | None:
    """Median time of replaying fn captured in a CUDA graph (launch gaps removed), or None if capture fails."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError:
        return None
    return median_ms(graph.replay, repeat=repeat)


def peak_mib(fn) -> float:
    """Peak memory allocated by one call above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written."""
    source = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    return 2 * source.numel() / (median_ms(lambda: target.copy_(source), repeat=20) / 1e3)


def row(group, name, shape, ms, tokens=None, memory=None, floor_ms=None, graph_ms=None):
    return {"group": group, "variant": name, "shape": shape, "median_ms": ms, "graph_ms": graph_ms,
            "tokens_per_s": tokens / (ms / 1e3) if tokens else None, "peak_mib": memory,
            "floor_pct": 100 * floor_ms / ms if floor_ms else None}


def bench_lstm_cell(dtype, quick, ceilings):
    rows = []
    for hidden in (256,) if quick else (256, 1024):
        for batch in (1, 8, 64) if quick else (1, 4, 8, 16, 64, 256):
            t = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)  # noqa: E731
            args = (t(batch, hidden), t(batch, hidden), t(batch, hidden), t(4 * hidden, hidden) / hidden ** 0.5,
                    t(4 * hidden, hidden) / hidden ** 0.5, t(4 * hidden), t(4 * hidden))
            shape = f"B={batch} I=H={hidden} {str(dtype)[6:]}"
            variants = {
                "cublas+pointwise": lambda: torch.ops.s2s_fast.cuda_lstm_cell_fwd(*args, False),
                "reference": lambda: reference.lstm_cell(*args),
                "torch (fused pointwise)": lambda: torch._VF.lstm_cell(args[0], args[1:3], *args[3:]),
            }
            if batch <= 8:
                variants["fused gemm (in-kernel)"] = lambda: torch.ops.s2s_fast.cuda_lstm_cell_fused_fwd(*args, False)
            weight_bytes = 2 * 4 * hidden * hidden * args[0].element_size()
            with torch.no_grad():
                for name, fn in variants.items():
                    ms = median_ms(fn)
                    rows.append(row("lstm_cell step", name, shape, ms, tokens=batch, memory=peak_mib(fn),
                                    floor_ms=weight_bytes / ceilings.bandwidth * 1e3, graph_ms=graph_median_ms(fn)))
    return rows


def bench_lstm_layer(dtype, quick, ceilings):
    rows = []
    steps = 64
    sizes = [(8, 512)] if quick else [(1, 256), (8, 256), (8, 512), (32, 512), (64, 128), (64, 256), (64, 512),
                                      (8, 1024), (32, 1024)]
    for batch, hidden in sizes:
        lstm = torch.nn.LSTM(hidden, hidden).to("cuda", dtype)
        params = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
        input = torch.randn(steps, batch, hidden, device="cuda", dtype=dtype)
        hx = torch.zeros(batch, hidden, device="cuda", dtype=dtype)
        shape = f"T={steps} B={batch} H={hidden} {str(dtype)[6:]}"
        variants = {
            "cuda persistent": lambda: F.lstm_layer(input, hx, hx, *params, backend="cuda"),
            "triton persistent": lambda: triton_lstm_layer.lstm_layer(input, hx, hx, *params, persistent=True),
            "triton per step": lambda: triton_lstm_layer.lstm_layer(input, hx, hx, *params, persistent=False),
            "cuDNN (nn.LSTM)": lambda: lstm(input, (hx[None], hx[None])),
            "reference loop": lambda: reference.lstm_layer(input, hx, hx, *params),
        }

        def not_served():
            served, _ = backends.resolve("lstm_layer", input.device, (input, hx, hx, *params, None, False),
                                         backend="auto")
            return () if served == "cuda" else ("cuda persistent",)

        rows += _time_layer(variants, "lstm_layer", input, shape, steps * batch, not_served)
    return rows


def _time_layer(variants, group, input, shape, tokens, not_served=tuple):
    """Rows timing each variant (a callable returning (output, ...)) for inference, then for training (forward and
    backward of output's sum). ``not_served()``, asked with autograd set as the row needs, names the variants that
    refuse the size: they get a row saying so instead of a time."""
    rows = []
    for training in (False, True):
        label = f"{group} {'train' if training else 'infer'}"
        input.requires_grad_(training)
        with torch.set_grad_enabled(training):
            refused = not_served()
            for name, fn in variants.items():
                if name in refused:
                    rows.append(row(label, name + " (size not served)", shape, float("nan")))
                    continue

                def step(fn=fn):
                    outputs = fn()
                    if training:
                        outputs[0].float().sum().backward()

                rows.append(row(label, name, shape, median_ms(step, warmup=3, repeat=10), tokens=tokens,
                                memory=peak_mib(step)))
    input.requires_grad_(False)
    return rows


def bench_gru_layer(dtype, quick):
    """The Triton GRU layer in both schedules against cuDNN and the reference loop (the cuda backend has no GRU
    layer kernel: it loops its cell)."""
    rows = []
    steps = 64
    for batch, hidden in [(8, 512)] if quick else [(8, 256), (64, 256), (64, 512)]:
        gru = torch.nn.GRU(hidden, hidden).to("cuda", dtype)
        params = [gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0]
        input = torch.randn(steps, batch, hidden, device="cuda", dtype=dtype)
        hx = torch.zeros(batch, hidden, device="cuda", dtype=dtype)
        shape = f"T={steps} B={batch} H={hidden} {str(dtype)[6:]}"
        variants = {
            "triton persistent": lambda: triton_gru_layer.gru_layer(input, hx, *params, persistent=True),
            "triton per step": lambda: triton_gru_layer.gru_layer(input, hx, *params, persistent=False),
            "cuDNN (nn.GRU)": lambda: gru(input, hx[None]),
            "reference loop": lambda: reference.gru_layer(input, hx, *params),
        }
        rows += _time_layer(variants, "gru_layer", input, shape, steps * batch)
    return rows


def bench_attention(dtype, quick, ceilings):
    rows = []
    cases = [(64, None, 50, 256, 512), (64, 50, 50, 256, 512)] if quick else \
        [(64, None, 50, 256, 512), (256, None, 100, 512, 1024), (64, 50, 50, 256, 512), (32, 100, 100, 512, 512)]
    for batch, queries, keys, attn, value_size in cases:
        t = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)  # noqa: E731
        query_shape = (batch, attn) if queries is None else (batch, queries, attn)
        mask = torch.rand(batch, keys, device="cuda") > 0.1
        inputs = [t(*query_shape), t(batch, keys, attn), t(attn), t(batch, keys, value_size)]
        queries_per_row = 1 if queries is None else queries
        tanh_ms = batch * queries_per_row * keys * attn / ceilings.tanh_rate * 1e3
        bytes_ms = batch * keys * (attn + value_size) * inputs[0].element_size() / ceilings.bandwidth * 1e3
        shape = f"B={batch} Tq={queries} Tk={keys} A={attn} Dv={value_size} {str(dtype)[6:]}"
        for training in (False, True):
            for name, impl in (("cuda fused", "cuda"), ("reference", "reference")):
                leaves = [x.detach().requires_grad_(training) for x in inputs]

                def step(impl=impl, leaves=leaves):
                    context, weights = F.additive_attention(*leaves, mask, backend=impl)
                    if training:
                        (context.float().sum() + weights.float().sum()).backward()

                with torch.set_grad_enabled(training):
                    ms = median_ms(step)
                    memory = peak_mib(step)
                    graph_ms = None if training else graph_median_ms(step)
                floor = max(tanh_ms * (2 if training else 1), bytes_ms)
                rows.append(row("attention " + ("fwd+bwd" if training else "fwd"), name, shape, ms,
                                tokens=batch * queries_per_row, memory=memory, floor_ms=floor, graph_ms=graph_ms))
    return rows


def markdown(rows) -> str:
    lines = ["| group | variant | shape | median ms | graph ms | tokens/s | peak MiB | % floor |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        def fmt(value, spec):
            return "" if value is None or value != value else format(value, spec)
        lines.append(f"| {r['group']} | {r['variant']} | {r['shape']} | {fmt(r['median_ms'], '.4f')} | "
                     f"{fmt(r['graph_ms'], '.4f')} | {fmt(r['tokens_per_s'], '.3g')} | {fmt(r['peak_mib'], '.1f')} | "
                     f"{fmt(r['floor_pct'], '.0f')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda_kernels: no CUDA GPU; nothing to time")
        return 0
    ceilings = Ceilings(bandwidth=copy_bandwidth(), tanh_rate=torch.cuda.get_device_properties(0).multi_processor_count
                        * SFU_RESULTS_PER_CLOCK * CLOCK_HZ)
    torch.manual_seed(0)
    rows = []
    for dtype in (torch.float16, torch.float32):
        quick = args.quick or dtype == torch.float32
        rows += bench_lstm_cell(dtype, quick, ceilings)
        rows += bench_lstm_layer(dtype, quick, ceilings)
        rows += bench_gru_layer(dtype, quick)
        rows += bench_attention(dtype, quick, ceilings)
    device = torch.cuda.get_device_name(0)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}_{device.replace(' ', '_')}_cuda_kernels"
    header = (f"# cuda kernels, {device}, {stamp}\n\ntorch {torch.__version__}; copy bandwidth "
              f"{ceilings.bandwidth / 1e12:.2f} TB/s (read + write); SFU estimate {SFU_RESULTS_PER_CLOCK} "
              "tanh/clock/SM at "
              f"{CLOCK_HZ / 1e9:.2f} GHz. Floors: lstm_cell = W_ih + W_hh bytes; attention = max(tanh count / SFU "
              "rate, key_proj + values bytes / bandwidth).\n\n")
    (args.out / f"{name}.md").write_text(header + markdown(rows) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"device": device, "torch": torch.__version__,
                                                        "ceilings": dataclasses.asdict(ceilings), "rows": rows},
                                                       indent=1))
    print(markdown(rows))
    print(f"wrote {args.out / name}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
