"""Where one call's time goes, per backend: host time, GPU kernel time and launches, and the host's top operators.

The first GPU run (H200, 2026-12-04) timed every forward+backward at about 1 ms however small, and the same cuda
kernel slower through s2s_fast.functional than called directly: host-bound timings whose host time no table said
where it went. For a few host-bound cases (the attention target's size, decoder-sized cell steps), each backend that
serves the op runs through s2s_fast.functional ("F") and as the backend's own function ("direct"), and this prints
per call:

- wall ms: a synchronised loop's time per call (what the bench's medians measure when the host is the bottleneck);
- enqueue ms: the same loop without waiting for the GPU (the host's own time per call);
- kernels: GPU kernels launched per call, and their summed GPU time (torch.profiler);
- host: the operators with the most self CPU time per call (torch.profiler).

Usage: python3 scripts/gpu_profile.py [--device cuda|cpu] [--quick]   (scripts/gpu_check.py's profile stage runs it;
--device cpu --quick is what the tests run: a check of the script, not a measurement, on the reference, aten and cpu
backends, and under the tests' S2S_FAST_CUDA_EMULATE and TRITON_INTERPRET the emulated cuda and interpreted triton).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from s2s_fast import backends
from s2s_fast import functional as F

# Calls a provider: (warm-up, timed, profiled). --quick: 5 instead of 40 (interpreted triton takes 0.27 s a call).
FULL_CALLS, QUICK_CALLS = (5, 30, 5), (1, 3, 1)


def _cases(device: torch.device, dtype: torch.dtype, quick: bool) -> list[tuple[str, str, dict, bool]]:
    """(name, op, inputs, backward) per case."""
    scale = 8 if quick else 1

    def t(*shape):
        return torch.randn(*shape, device=device, dtype=dtype)

    b, q, k, a = 64 // scale, 64 // scale, 64 // scale, 512 // scale
    attention = {"query_proj": t(b, q, a), "key_proj": t(b, k, a), "v": t(a), "values": t(b, k, a)}
    cases = [(f"additive_attention fwd+bwd B={b} Tq=Tk={q} A={a}", "additive_attention", attention, True)]
    hidden = 512 // scale
    for batch in (8, 64):
        batch = max(1, batch // scale)
        lstm = {"input": t(batch, hidden), "hx": t(batch, hidden), "cx": t(batch, hidden),
                "weight_ih": t(4 * hidden, hidden), "weight_hh": t(4 * hidden, hidden), "bias_ih": t(4 * hidden),
                "bias_hh": t(4 * hidden)}
        cases.append((f"lstm_cell fwd B={batch} H={hidden}", "lstm_cell", lstm, False))
    gru = {"input": t(64 // scale, hidden), "hx": t(64 // scale, hidden), "weight_ih": t(3 * hidden, hidden),
           "weight_hh": t(3 * hidden, hidden), "bias_ih": t(3 * hidden), "bias_hh": t(3 * hidden)}
    cases.append((f"gru_cell fwd B={64 // scale} H={hidden}", "gru_cell", gru, False))
    return cases


def _providers(op: str, device: torch.device, inputs: dict) -> list[tuple[str, object]]:
    providers = []
    args = tuple(inputs.values())
    for name in backends.available_backends(device):
        try:
            backends.resolve(op, device, args, backend=name)
        except backends.BackendError:
            continue
        module = importlib.import_module(f"s2s_fast.{name}")
        providers.append((f"F {name}", lambda *a, _n=name: getattr(F, op)(*a, backend=_n)))
        if op in module.OPS:
            providers.append((f"direct {name}", module.OPS[op]))
    return providers


def _call(fn, inputs: dict, backward: bool):
    leaves = [v.detach().requires_grad_(backward) for v in inputs.values()]
    outputs = fn(*leaves)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if backward:
        torch.autograd.backward([o for o in outputs if o.requires_grad],
                                [torch.ones_like(o) for o in outputs if o.requires_grad])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, inputs: dict, backward: bool, device: torch.device, calls=FULL_CALLS) -> dict:
    warmup, timed, profiled = calls
    with torch.no_grad() if not backward else torch.enable_grad():
        for _ in range(warmup):
            _call(fn, inputs, backward)
        _sync(device)
        begin = time.perf_counter()
        for _ in range(timed):
            _call(fn, inputs, backward)
        enqueued = time.perf_counter()
        _sync(device)
        done = time.perf_counter()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as trace:
            for _ in range(profiled):
                _call(fn, inputs, backward)
            _sync(device)
    events = trace.key_averages()
    kernels = [e for e in events if e.device_type is not None and "CUDA" in str(e.device_type) and e.count]
    top = sorted((e for e in events if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)[:5]
    return {
        "wall_ms": (done - begin) * 1e3 / timed,
        "enqueue_ms": (enqueued - begin) * 1e3 / timed,
        "kernels": sum(e.count for e in kernels) / profiled,
        "kernel_ms": sum(getattr(e, "self_device_time_total", 0) for e in kernels) / 1e3 / profiled,
        "host": ", ".join(f"{e.key} {e.self_cpu_time_total / profiled:.0f} us" for e in top),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 8x smaller, 5 calls a provider (a CPU check of the script)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    rows, failed = 0, []
    for name, op, inputs, backward in _cases(device, dtype, args.quick):
        print(f"== {name} ({dtype}, {device.type})", flush=True)
        for provider, fn in _providers(op, device, inputs):
            try:
                result = measure(fn, inputs, backward, device, QUICK_CALLS if args.quick else FULL_CALLS)
            except Exception as error:  # one provider failing must not hide the others
                print(f"  {provider:22s} failed: {type(error).__name__}: {' '.join(str(error).split())[:200]}")
                failed.append(f"{name} {provider}")
                continue
            rows += 1
            print(f"  {provider:22s} wall {result['wall_ms']:.3f} ms  enqueue {result['enqueue_ms']:.3f} ms  "
                  f"kernels {result['kernels']:.0f} ({result['kernel_ms']:.3f} ms)  host: {result['host']}",
                  flush=True)
    print(f"gpu-profile: {rows} provider rows on {device.type}"
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return 0 if rows and not failed else 1  # a provider that fails is a finding, whatever the others did


if __name__ == "__main__":
    sys.exit(main())
