"""The performance model's floors (docs/design.md): the least time any implementation could take on this machine.

A benchmark's work is counted three ways: the fewest bytes it must move through memory (each input read once, each
output written once), its special-function evaluations (tanh, sigmoid, exp: what the reference evaluates), and its
matrix-product flops. Each over the machine's measured rate (copy bandwidth, special-function rate, matmul rate)
gives a time; the largest is the floor, and its name says what bounds the benchmark. The rates are measured on the
same machine in the same run as the benchmarks.
"""

from __future__ import annotations

import glob
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..backends import matmul_precision_in_force
from .timing import TimingPolicy, measure

# Ops that evaluate a special function per output element; the model counts one evaluation per element.
_SPECIAL_FUNCTION_OPS = {
    "tanh", "sigmoid", "exp", "exp2", "expm1", "log", "log1p", "_softmax", "_log_softmax",
    "_log_softmax_backward_data", "erf", "rsqrt", "sqrt",
}
_RATE_POLICY = TimingPolicy(warmup_s=0.05, budget_s=0.3, min_reps=5, max_reps=200)


@dataclass(frozen=True)
class MachineRates:
    """Rates measured on this machine: the floors' denominators."""

    copy_bytes_per_s: float  # device-to-device copy, bytes read plus bytes written
    special_functions_per_s: float  # float32 tanh evaluations
    matmul_flops_per_s: float  # large matrix product in the benchmarks' dtype
    matmul_dtype: str
    methods: dict  # how each rate was measured

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Work:
    """What one benchmark call must do at the least."""

    bytes: int
    special_functions: int
    matmul_flops: int

    def to_dict(self) -> dict:
        return asdict(self)


class _SpecialFunctionCounter(TorchDispatchMode):
    """Counts output elements of special-function ops (see _SPECIAL_FUNCTION_OPS)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__.rstrip("_") in _SPECIAL_FUNCTION_OPS and isinstance(out, torch.Tensor):
            self.count += out.numel()
        return out


def count_work(run: Callable[[], object]) -> tuple[int, int]:
    """Run ``run()`` once and return (special-function evaluations, matmul flops) of the aten ops it dispatched."""
    specials = _SpecialFunctionCounter()
    flops = FlopCounterMode(display=False)
    with flops, specials:
        run()
    return specials.count, int(flops.get_total_flops())


def floor_seconds(work: Work, rates: MachineRates) -> tuple[float, str]:
    """The floor in seconds and what bounds it: "memory", "special functions" or "matmul"."""
    terms = {
        "memory": work.bytes / rates.copy_bytes_per_s,
        "special functions": work.special_functions / rates.special_functions_per_s,
        "matmul": work.matmul_flops / rates.matmul_flops_per_s,
    }
    bound = max(terms, key=terms.get)
    return terms[bound], bound


def _seconds(run: Callable[[int], object], device: torch.device) -> float:
    """The fastest of repeated calls: a rate is a ceiling, and on a shared machine slower calls were interrupted."""
    return measure(run, device, 1, _RATE_POLICY).min_ms / 1e3


def cache_bytes(device: torch.device) -> int:
    """Size of the largest cache in front of memory (GPU L2, CPU last level), 32 MiB if unknown."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 32 << 20)
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if scale > 1 else text
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else 32 << 20


def measure_copy_bandwidth(device: torch.device, quick: bool) -> tuple[float, str]:
    """Bytes per second of a device-to-device copy far larger than the cache (bytes read + bytes written)."""
    size = max(8 * cache_bytes(device), (256 << 20) if device.type == "cuda" else (64 << 20))
    size = min(size, 64 << 20) if quick and device.type == "cpu" else size
    source = torch.rand(size // 4, device=device)
    target = torch.empty_like(source)
    seconds = _seconds(lambda _: target.copy_(source), device)
    return 2 * source.nbytes / seconds, f"copy_ of {source.nbytes >> 20} MiB float32"


def _triton_tanh_rate(device: torch.device) -> float:
    """tanh.approx.f32 evaluations per second: a Triton kernel chaining tanh in registers on many lanes."""
    from .tanh_kernel import tanh_chain_kernel

    block, iterations = 1024, 512
    lanes = torch.cuda.get_device_properties(device).multi_processor_count * 16 * block
    x = torch.rand(lanes, device=device) * 2 - 1
    out = torch.empty_like(x)
    seconds = _seconds(lambda _: tanh_chain_kernel[(lanes // block,)](x, out, ITERATIONS=iterations, BLOCK=block,
                                                                       num_warps=8), device)
    if not torch.isfinite(out).all():
        raise RuntimeError("the tanh throughput kernel produced non-finite values")
    return lanes * iterations / seconds


def measure_special_function_rate(device: torch.device) -> tuple[float, str]:
    """float32 tanh evaluations per second.

    On a GPU with Triton: the hardware tanh (tanh.approx.f32) chained in registers, the special-function unit's
    rate. Otherwise: torch.tanh over a tensor that stays in cache, which also pays for loads and stores, so the
    rate it gives is a lower bound of the unit's.
    """
    failure = ""
    if device.type == "cuda":
        try:
            return _triton_tanh_rate(device), "Triton kernel chaining tanh.approx.f32 in registers"
        except Exception as error:  # noqa: BLE001 - any failure falls back to the torch measurement, and says why
            failure = f" (the Triton measurement failed: {type(error).__name__}: {error})"
    # Input and output together fit the GPU's L2, or half of a CPU core's L2 per thread.
    elements = max(1 << 14, cache_bytes(device) // 32) if device.type == "cuda" else (1 << 16)
    x = torch.rand(elements, device=device) * 2 - 1
    out = torch.empty_like(x)
    seconds = _seconds(lambda _: torch.tanh(x, out=out), device)
    return elements / seconds, f"torch.tanh over {elements} cached float32 elements{failure}"


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[float, str]:
    """Flops per second of a large square matrix product in ``dtype`` (float32 on a CPU for low precision)."""
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    size = 8192 if device.type == "cuda" else (768 if quick else 1536)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds, through = _seconds(lambda _: a @ b, device), ""
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        # torch's CPU products go through MKL, whose float32 GEMM off Intel's CPUs runs far below oneDNN's (105
        # against 226 GFLOP/s on an AMD EPYC, 2026-12-04): the ceiling is the faster of the two.
        a_onednn, b_onednn = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        onednn = _seconds(lambda _: torch._C._nn.mkldnn_linear(a_onednn, b_onednn), device)
        if onednn < seconds:
            seconds, through = onednn, " through oneDNN (faster here than torch.mm's MKL)"
    precision = matmul_precision_in_force()
    at = f" (float32 matmul precision {precision})" if dtype == torch.float32 and precision != "highest" else ""
    return 2 * size**3 / seconds, f"{size}x{size} @ {size}x{size}{through} in {str(dtype).removeprefix('torch.')}{at}"


def best_rates(first: MachineRates, second: MachineRates) -> MachineRates:
    """The higher of two measurements of each rate (a ceiling measured twice: at the start and end of a run), each
    with the method of the measurement it came from."""
    copy, special, matmul = (max(first, second, key=lambda rates: getattr(rates, name)) for name in
                             ("copy_bytes_per_s", "special_functions_per_s", "matmul_flops_per_s"))
    methods = dict(copy=copy.methods["copy"], special_functions=special.methods["special_functions"],
                   matmul=matmul.methods["matmul"], seconds=first.methods["seconds"] + second.methods["seconds"],
                   measurements=2)
    return MachineRates(copy.copy_bytes_per_s, special.special_functions_per_s, matmul.matmul_flops_per_s,
                        matmul.matmul_dtype, methods)


def measure_rates(device: torch.device, dtype: torch.dtype, quick: bool) -> MachineRates:
    """Measure the three rates the floors use, on ``device``."""
    started = time.perf_counter()
    copy_rate, copy_method = measure_copy_bandwidth(device, quick)
    special_rate, special_method = measure_special_function_rate(device)
    matmul_rate, matmul_method = measure_matmul_rate(device, dtype, quick)
    for name, rate in (("copy bandwidth", copy_rate), ("special-function rate", special_rate),
                       ("matmul rate", matmul_rate)):
        if not (math.isfinite(rate) and rate > 0):
            raise RuntimeError(f"measuring the {name} gave {rate}")
    methods = {"copy": copy_method, "special_functions": special_method, "matmul": matmul_method,
               "seconds": round(time.perf_counter() - started, 2)}
    return MachineRates(copy_rate, special_rate, matmul_rate, matmul_method.split(" in ")[-1], methods)
