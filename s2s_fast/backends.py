"""Backend registry: which implementation of an op serves a call.

Five backends implement the ops of :mod:`s2s_fast.functional`, each as a subpackage of ``s2s_fast``:

- ``"reference"``: pure PyTorch, any device; the ground truth of every test.
- ``"aten"``: torch's own RNN kernels (oneDNN/MKL on a CPU, cuDNN on a GPU) for the layers and cells.
- ``"cpu"``: fused C++ kernels for CPU tensors (``s2s_fast._cpu``): additive attention (torch has none), the LSTM
  and GRU layers (their backward beats torch's CPU RNN backward), and the cells and linear with their products
  through oneDNN where torch's (MKL's) are slow.
- ``"triton"``: fused Triton kernels; CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1``.
- ``"cuda"``: the compiled extension ``s2s_fast._C``; CUDA tensors when the extension was built.

A backend subpackage exposes three names:

- ``unavailable_reason(device) -> str | None``: ``None`` when the backend can run on tensors of ``device``,
  else a sentence saying why not and what to do about it.
- ``OPS``: ``dict[str, callable]`` from op name (see ``OP_NAMES``) to an implementation taking exactly the
  arguments of the functional entry point, minus ``backend``, already validated; an attention's query always
  [B, Tq, D] (the entry point hands a [B, D] query over as [B, 1, D] and squeezes the results).
- ``LIMITS``: ``dict[str, callable]`` from op name to a check taking the same arguments and returning ``None``
  when the implementation can serve the call, else the limit it hits (dtype, size, ...). Optional per op.

- ``VARIANTS``, optional: ``dict[str, dict[str, (callable, limit or None)]]``, ways an op's implementation can be
  forced (a schedule, a code path) for the benchmarks to time side by side; auto never uses them.

A backend that implements ``lstm_cell`` but not ``lstm_layer`` (likewise GRU) serves the layer by running the
reference time loop around its own cell. Every backend serves ``linear``: one that does not implement it (the fused
GPU backends: cuBLAS is the product there) with torch's own, the reference's, so that a model on any backend has its
projections. An op built of other ops (``lstm_attention_decoder``: lstm_cell, linear and additive_attention step by
step; ``gru_attention_decoder`` likewise with gru_cell) is served by a backend without its own implementation as the
reference's composition of that backend's ops (where it serves them all), and by auto, where no fused backend serves
the call itself, as the composition of each op's auto choice.

Selection order: explicit ``backend=`` argument > innermost ``use_backend(...)`` > ``set_backend(...)`` > environment
variable ``S2S_FAST_BACKEND`` > ``"auto"``. Auto tries cuda, triton, reference for CUDA tensors (aten first where
``CUDNN_FASTER`` says cuDNN was measured faster; triton before cuda for additive attention from
``TRITON_ATTENTION_FROM_WORK``) and cpu, aten, reference for CPU tensors (aten first for the ops in
``CPU_INFERENCE_PREFERS_ATEN`` when no gradient is recorded, but for the large calls of
``CPU_BF16_INFERENCE_PREFERS_CPU`` while the cpu backend's products run in bfloat16, and where
``CPU_ATEN_FASTER_TRAINING`` says oneDNN was measured faster when one is, or, for the ops in
``CPU_ATEN_FASTER_TRAINING_OFF_INTEL``, on any CPU that is not Intel's but for the wide inputs of
``CPU_LAYER_WIDE_INPUT`` and the padded ones of ``CPU_LAYER_PADDED``; cpu for the ops in ``CPU_ONEDNN_FROM_WORK`` only
where its products go through oneDNN and the call is large enough (``CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512`` on a CPU
without AVX-512), or for the cells of
``CPU_BF16_INFERENCE_PREFERS_CPU``), skipping a backend that is unavailable or whose
limit check refuses the call, or that cannot serve it under the torch.func transforms or forward-mode AD around it
(BACKWARD_ONLY, ATEN_UNBATCHED); for a layer op it tries the fused backends' own layers before their cells in the
reference time loop. An explicit choice that cannot serve the call raises ``BackendError`` (a ``RuntimeError``) saying
why.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import threading
import warnings
from typing import Callable, Iterator

import torch

from . import transforms

BACKEND_NAMES = ("cuda", "triton", "cpu", "aten", "reference")
VALID_NAMES = ("auto",) + BACKEND_NAMES
OP_NAMES = (
    "lstm_cell",
    "gru_cell",
    "lstm_layer",
    "gru_layer",
    "additive_attention",
    "dot_attention",
    "linear",
    "dropout",
    "log_softmax_max",
    "beam_candidates",
    "lstm_attention_decoder",
    "gru_attention_decoder",
)
ENV_VAR = "S2S_FAST_BACKEND"

# Layer ops a backend may serve by looping its cell op in the reference time loop, and how many leading arguments
# the layer shares with that cell: (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh) for the LSTM, no cx for GRU.
_LAYER_FROM_CELL = {"lstm_layer": "lstm_cell", "gru_layer": "gru_cell"}
_CELL_ARG_COUNT = {"lstm_cell": 7, "gru_cell": 6}
# Ops torch's own function (the reference's) serves on a backend that does not implement them.
_TORCH_SERVES = frozenset({"linear", "dropout", "log_softmax_max", "beam_candidates"})
# Ops built of other ops, and those ops: a backend that does not implement one runs the reference's composition of it
# on its own ops (where it serves them all); auto, when no fused backend serves the call itself, runs the composition
# on each op's auto choice.
_COMPOSED = {"lstm_attention_decoder": ("lstm_cell", "linear", "additive_attention"),
             "gru_attention_decoder": ("gru_cell", "linear", "additive_attention")}
# The fused backends auto tries, in order, on tensors of each device type (then the reference).
_AUTO_FUSED = {"cuda": ("cuda", "triton"), "cpu": ("cpu", "aten")}
# Where cuDNN (the aten backend) was measured faster than the fused backends on a GPU: rows of (op, dtype, batch
# sizes, hidden sizes), the sizes as ranges; auto tries aten first on a CUDA call that a row matches. From the first
# GPU run (H200, bfloat16, 2026-12-04, benchmarks/results/gpu-check-h200-2026-12-04), each backend through
# s2s_fast.functional side by side: torch's cells (one cuBLAS product and a fused pointwise kernel, dispatched in C++)
# ran ahead of the cuda cells where these host-bound steps are timed: LSTM forward at B=16, 64 and 256 (0.113, 0.070,
# 0.094 ms against 0.133, 0.092, 0.105; forward+backward at B=64 0.58 against 1.03), behind at B=1 and 8 (0.113 and
# 0.072 against 0.080 and 0.054, the fused-gates kernel); GRU at B=1, 64 and 256 (0.093, 0.072, 0.095 against 0.156,
# 0.129, 0.131; forward+backward at B=64 0.56 against 0.91). Its layers were behind the fused ones at every size
# (B=1-256, H=256-1024, T=64 and 128). Other dtypes were not measured.
CUDNN_FASTER: tuple[tuple[str, torch.dtype, range, range], ...] = (
    ("lstm_cell", torch.bfloat16, range(16, 257), range(512, 1025)),
    ("gru_cell", torch.bfloat16, range(1, 257), range(512, 1025)),
)
# From how much work (B * Tq * Tk * A) auto tries triton before cuda for additive attention on a GPU, without and with
# a gradient recorded. The first GPU run (H200, bfloat16, 2026-12-04) timed the Triton kernels well ahead of the cuda
# ones where the GPU's time shows (B=128, Tq=Tk=128, A=512, i.e. 1.07e9: forward 0.38 ms against 0.87,
# forward+backward 1.41 against 2.22) and behind where host time dominates (B=64, Tq=Tk=64, A=512, 1.3e8: 0.21
# against 0.14, 1.42 against 0.52; the Triton path costs 0.2 ms forward and 1.4 ms forward+backward of host time
# however small the call); the crossings of straight lines through those points.
TRITON_ATTENTION_FROM_WORK = {False: 250_000_000, True: 650_000_000}
_GATES = {"lstm_cell": 4, "lstm_layer": 4, "gru_cell": 3, "gru_layer": 3}
# Ops for which auto tries aten before cpu on a CPU call that records no gradient: torch's oneDNN LSTM forward was
# measured faster than the cpu backend's at two threads at every size, and at one thread at B=64 (the cpu layer wins
# forward+backward: it keeps what its backward needs and takes the weight gradients in one product over all steps).
# s2s-fast bench --device cpu, 2026-12-04 (README).
CPU_INFERENCE_PREFERS_ATEN = frozenset({"lstm_layer"})
# Ops of CPU_INFERENCE_PREFERS_ATEN (and cells) for which auto tries cpu first after all, on a float32 call that
# records no gradient, while the cpu backend's float32 products run in bfloat16 (s2s_fast.cpu.bf16_products:
# torch.set_float32_matmul_precision("medium") on a CPU with bfloat16 products in hardware), from WORK multiply-adds a
# step per torch thread (B x gates*H x (I + H) / threads): op -> WORK. torch's own LSTM layer (oneDNN's RNN) stays
# float32 there. Measured 2026-12-06 on a 2-core Intel Xeon with AMX, one direction under torch.no_grad through
# s2s_fast.functional, cpu and aten alternating in one process, lengths uniform in (T/2, T] and none (T=16: B=1, 8, 64
# at I=192, H=384 and B=256 at I=768, H=384; T=64: B=8, I=H=256 and B=64, I=H=512): at one thread the cpu layer ran
# 0.32-0.90x aten's time from 4.2M multiply-adds a step and 1.34-1.45x at 0.9M (B=1); at two threads 0.35-0.82x from
# 57M, 0.70-1.13x at 7.1M, and 1.33-1.87x at 4.2M and 0.9M. (On the Zen 4 machine its forward alone ran 1.70-1.79x
# aten's speed at one thread from 17M, README.) The cells (which auto does not otherwise try on cpu where its products
# go through ATen: CPU_ONEDNN_FROM_WORK) at any size: with their packed weights kept across calls
# (csrc/cpu/products.h's KeptWeights) the cpu cells ran 0.65-0.98x aten's time at one thread and 0.60-0.99x at two
# (one call each at 1.04-1.05x) from B=1 to 5000 (I=576, H=384 and I=768, H=512; 2026-12-07, the same machine type,
# benchmarks/results/cpu-intel-xeon-amx-2026-12-07-kept-weights/), where torch's cells round their weights at each
# call. Not measured on a CPU without AMX (torch's products stay float32 there).
CPU_BF16_INFERENCE_PREFERS_CPU = {"lstm_layer": 4_000_000, "lstm_cell": 0, "gru_cell": 0}
# Where oneDNN's LSTM forward+backward was measured faster than the cpu layer's on a CPU: rows of (op, fewest torch
# threads, batch sizes, hidden sizes); auto tries aten first on a CPU call that records a gradient and matches a row.
# A sweep at T=64 on the 2-core Xeon, 2026-12-04: at two threads and H=256, B=8-32 ran 0.83-0.89x of aten's speed on
# the cpu layer (MKL's small per-step products scale worse than oneDNN's), B<=4 and B>=64 1.1-1.3x; at H>=384 and at
# one thread the cpu layer was as fast or faster at every size.
CPU_ATEN_FASTER_TRAINING: tuple[tuple[str, int, range, range], ...] = (("lstm_layer", 2, range(8, 33), range(1, 257)),)
# The table above holds on Intel's CPUs. The cpu layers' products go through MKL, whose float32 GEMM on other
# vendors' CPUs runs far below oneDNN's: on a 2-core AMD EPYC with AVX-512, 2026-12-04, a [64, 512] x [512, 2048]
# product ran at 105 GFLOP/s through MKL and 226 through oneDNN, and the cpu LSTM layer's forward+backward at 1.5-2.2x
# the time of aten's (oneDNN's fused RNN) at every size swept (B=8-256, H=128-512, T=16 and 64, one and two threads,
# with and without lengths). So on a CPU whose vendor is not Intel, auto tries aten first for these ops' training calls
# at every size. The cpu GRU layer is not among them: it ran 0.76-1.08x of aten's time there. With the cpu layers'
# products through oneDNN on such CPUs (csrc/cpu/products.h) the sweep again, same machine: the LSTM layer 1.5-1.9x
# faster than through MKL and still 0.55-1.02x of aten's speed (so the rule stays), the GRU layer 1.4-2.5x aten's.
CPU_ATEN_FASTER_TRAINING_OFF_INTEL = frozenset({"lstm_layer"})
# Except, off Intel's CPUs, a layer whose input is at least WIDTH times its hidden size (the upper layers of a
# bidirectional stack read both directions' outputs) over at least ROWS rows (T x B), with the cpu layer's float32
# products through oneDNN: op -> (WIDTH, ROWS). The cpu layer computes all steps' input products, and their weight
# gradient, in one product each, which there outweighs the rest. Measured 2026-12-05 on a 2-core AMD EPYC with AVX-512
# (a slower one than the sweep above: MKL and oneDNN both at about 100 GFLOP/s), one direction with lengths,
# forward+backward, through s2s_fast.functional side by side, cpu against aten: I = 2H at T x B = 2048-4096
# (T=16, B=128 and 256, H=192; T=32, B=64, H=256) 1.08-1.16x faster at one and two threads; at T x B = 1024 0.96-0.98x;
# I = H 0.71-0.99x (one exception, B=256, H=192: 1.07-1.11x). In the g2p training step (bench, one thread) the rule
# put auto at 1.28-1.30x the reference, from 1.25x.
CPU_LAYER_WIDE_INPUT = {"lstm_layer": (2, 2048)}
# And, off Intel's CPUs, a layer whose per-row lengths leave at least SHARE of its T x B positions padded, with at
# least WORK multiply-adds per step (B x gates*H x (I + H)), float32 with the cpu layer's products through oneDNN:
# op -> (SHARE, WORK). The cpu layer runs each step's running rows only (csrc/cpu/rnn_layer_binding.h: its input and
# weight-gradient products skip the padding too), where oneDNN's runs every position. Measured 2026-12-06 on the
# 2-core AMD EPYC with AVX-512 of CPU_LAYER_WIDE_INPUT's measurement, one direction (reverse) forward+backward through
# s2s_fast.functional, the two alternating, lengths uniform in (T/2, T] (about a fifth of the positions padded),
# H = 192-512, I = H and 2H, T x B = 16 x 64 to 16 x 256 and 64 x 32: the cpu layer 1.08-1.41x faster at one thread at
# every size, and at two threads 1.06-1.43x from B x 4H x (I + H) = 28M multiply-adds a step, 0.85-1.00x below 19M
# (B = 32-64 at H = 192-256, I = H). Where no row is padded, I = H: 0.83-0.91x (B = 256: 1.03-1.12x). Against the
# share padded (I = H; 3-17 %): at H = 192 the cpu layer caught up with aten at 12-15 % at one thread and not by 17 %
# at two; at H = 512 from 9 %.
CPU_LAYER_PADDED = {"lstm_layer": (1 / 6, 24_000_000)}
# Ops for which auto tries cpu before aten for a training call on a CPU that is not Intel's while the cpu backend's
# float32 products run in bfloat16 (s2s_fast.cpu.bf16_products: torch.set_float32_matmul_precision("medium") on a CPU
# with bfloat16 products in hardware), with at least WORK multiply-adds a step (B x gates*H x (I + H)): op -> WORK.
# torch's own CPU LSTM layer (oneDNN's RNN) stays float32 there. Measured 2026-12-06 on a 2-core AMD EPYC with
# AVX512-BF16 (Zen 4), one direction forward+backward through s2s_fast.functional, cpu and aten alternating, lengths
# uniform in (T/2, T] and none, T x B = 16 x 64 to 16 x 256, 32 x 64 and 64 x 32, H = 192-512, I = H and 2H (17M to
# 134M multiply-adds a step): the cpu layer 1.30-1.84x faster at one thread and 1.03-1.81x at two. Smaller calls keep
# the float32 rules; inference (forward alone 1.70-1.79x at one thread there) has CPU_BF16_INFERENCE_PREFERS_CPU.
CPU_BF16_PREFERS_CPU = {"lstm_layer": 16_000_000}
# Backends whose layers never read the input at a row's padded steps, nor the initial state of a row of length 0
# (s2s_fast.aten.sequence runs padded steps on a row of zeros and empty rows from a zero state; the cpu layers gather
# the running rows' inputs and states, csrc/cpu/rnn_layer_binding.h; the reference zeroes both itself,
# reference.time_loop.without_padding, which also keeps them out of the cpu layers' second-order gradients, taken
# through the reference). The others' layers compute every step's input product and every row's step
# h @ weight_hh^T, and take their weight gradients in products over all steps and rows, where a NaN or infinity at a
# padded step (torch.empty's garbage) or in an empty row's state would reach the gradients as 0 * NaN:
# s2s_fast.functional zeroes both for them first (but for their cells in the reference's time loop, which does).
LAYERS_NEVER_READ_PADDING = frozenset({"aten", "cpu", "reference"})
# Ops the cpu backend serves with torch's own work done through another product library: its cells (a layer's single
# step) and linear, and the fewest multiply-adds a call needs for auto to try cpu (rows x K x N for linear, B x (I + H)
# x gates*H for a cell). Auto tries cpu for them only in float32 where the cpu backend's products go through oneDNN
# (s2s_fast.cpu.products_library: x86 CPUs that are not Intel's; with the library torch's own cells and linear use,
# MKL, they are the same work) and the call is large enough to pay oneDNN's cost per call. Measured on a 2-core AMD
# EPYC, 2026-12-04, one thread, through s2s_fast.functional against aten: linear 0.56-0.87x from 16K to 1M
# multiply-adds, 1.0-1.2x forward (1.2-1.9x forward+backward) at 2M, 1.3-2.1x from 4M ([M, 512] x [512, 512],
# [M, 1024] x [1024, 512], [M, 512] x [512, 8000], [M, 384] x [384, 43], M = 1-64); the cells 0.86-1.0x forward
# (0.7-1.3x forward+backward) under 4M (B=1-2, H=384-512), 1.0-1.35x (1.0-1.5x) at 4-6M, 1.3-1.7x (1.4-1.7x) at
# B=8-16; B=64-128: 2.0x. The Seq2Seq model's greedy decoding and training step: README. (The cells at inference
# while the cpu backend's products run in bfloat16: CPU_BF16_INFERENCE_PREFERS_CPU.)
CPU_ONEDNN_FROM_WORK = {"linear": 2_000_000, "lstm_cell": 4_000_000, "gru_cell": 4_000_000}
# The same on an x86 CPU without AVX-512 (cpu_has_avx512), where MKL's float32 products run at oneDNN's rate: op ->
# WORK; and where the call's weights hold at least CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512's (ELEMENTS, WORK)
# ELEMENTS (8 MB in float32), from its WORK at one torch thread and at any size at more. There the cpu backend's
# cells and linear pay their cost per call (a custom op; linear's backward in Python) for little gain over MKL but
# with large weights. Measured 2026-12-08 on a 2-core AMD EPYC with AVX2 only (Zen 3), one and two threads, forward
# under no_grad and forward+backward through s2s_fast.functional against torch's own (aten's cells, torch's linear),
# the two alternating in one process, 61 sizes (benchmarks/results/cpu-amd-epyc-zen3-2026-12-08-cells-and-linear/,
# summary.txt), torch's time over cpu's:
# - where this routes to cpu: linear 0.95-2.10x (medians 1.05-1.58 by thread count, pass and weights), the cells
#   0.82-2.17x (medians 0.97-1.52; 11 of 78 under 1, 0.97-1.00x but for the LSTM cell at B = 8, H = 512 forward+
#   backward, 0.83x, and the GRU cell at B = 1, H = 768 forward, 0.91x, both at two threads);
# - where it keeps torch's own: with smaller weights, linear 0.44-1.35x (medians 0.78-0.94), the cells 0.61-1.26x
#   (medians 0.79-0.98); with large weights at one thread, under 25M multiply-adds (M = 1-4 rows; B = 1, and the
#   LSTM cell at B = 8, H = 512), 0.73-1.20x (medians 0.90-1.02).
# With its output layer (M = 1, K = 512, N = 8,000) on torch's own, the translation model's decoder step at B = 1
# took 1.26x the time at two threads (model_ab-one-thread-rule-threads-2.txt; with this rule 1.02x,
# model_ab-threads-2.txt). Not measured at more than two threads.
CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512 = {"linear": 250_000_000, "lstm_cell": 400_000_000, "gru_cell": 400_000_000}
CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512 = (2_000_000, 25_000_000)

# What a backend cannot serve under torch.func's transforms and forward-mode AD (s2s_fast.transforms). The fused
# backends' ops are custom operators that autograd differentiates through their backward alone (torch.library's
# register_autograd): torch gives them no forward-mode derivative (torch.func.jvp read a zero tangent from the cpu
# layers, silently; torch.autograd.forward_ad refuses them) and refuses them under torch.func.grad with an error about
# autograd.Function. Under torch.func.vmap they run one batch entry at a time (torch warns), and are right. torch's
# RNN ops, behind the aten backend's layers and LSTM cell, have no batching rule for torch.func.vmap (torch.nn.LSTM
# fails there too), and torch's CPU LSTM layer below float64 (oneDNN's) no forward-mode derivative. Auto passes over
# a backend that cannot serve a call under these; the reference serves them all.
BACKWARD_ONLY = frozenset({"cpu", "triton", "cuda"})
ATEN_UNBATCHED = frozenset({"lstm_layer", "gru_layer", "lstm_cell"})

_global_choice: str | None = None
# Per-thread stack of use_backend choices; a threading.local (unlike a ContextVar) is traced by torch.compile.
_context = threading.local()
_loaded: dict[str, tuple] = {}


class BackendError(RuntimeError):
    """A backend cannot serve a call: it is unavailable on this device, or the call hits one of its limits."""


def check_backend_name(name: str, source: str = "the backend argument") -> str:
    """Return ``name`` lower-cased if it names a backend or "auto"; else raise ValueError listing the names."""
    if not isinstance(name, str) or name.lower() not in VALID_NAMES:
        raise ValueError(f"unknown backend {name!r} from {source}; valid names are {', '.join(VALID_NAMES)}")
    return name.lower()


def _load(name: str):
    """Import the backend subpackage once; an import failure makes it unavailable, with the reason kept."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(f"s2s_fast.{name}"), None
        except ImportError as error:
            _loaded[name] = None, f"backend {name!r} could not be imported: {error}"
    return _loaded[name]


def resolve_device(name: str) -> torch.device:
    """The device a ``--device`` setting names: "auto" is cuda when torch sees a GPU, else cpu; "cpu", "cuda" and
    "cuda:N" are taken as given. Raises ValueError for any other name, and for cuda when torch sees no GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU")
    return device


# torch.set_float32_matmul_precision's words: "medium" lets float32 products run in bfloat16 where that is fast (on a
# CPU with bfloat16 products in hardware the cpu backend's, s2s_fast.cpu.bf16_products; torch's own on a CPU with
# AMX), "high" and, on a GPU, "medium" in TF32.
MATMUL_PRECISIONS = ("highest", "high", "medium")


def _matmul_switches() -> dict:
    """torch's per-backend float32 matmul switches by backend (torch >= 2.9; none before)."""
    switches = {name: getattr(getattr(torch.backends, name, None), "matmul", None) for name in ("mkldnn", "cuda")}
    return {name: switch for name, switch in switches.items() if hasattr(switch, "fp32_precision")}


def float32_matmul_switch(device: torch.device) -> str | None:
    """The per-backend float32 matmul switch in force for ``device``'s products ("ieee", "tf32", "bf16", "none"):
    cuda's on a GPU, oneDNN's on a CPU; None on a torch without them (< 2.9)."""
    switch = _matmul_switches().get("cuda" if device.type == "cuda" else "mkldnn")
    return None if switch is None else switch.fp32_precision


def check_matmul_precision(precision: str | None, source: str = "matmul precision") -> None:
    """Refuse a float32 matmul precision that is neither None nor a word of MATMUL_PRECISIONS."""
    if precision is not None and precision not in MATMUL_PRECISIONS:
        raise ValueError(f"{source} must be one of {', '.join(MATMUL_PRECISIONS)}, got {precision!r}")


@contextlib.contextmanager
def float32_matmul_precision(precision: str | None) -> Iterator[None]:
    """torch.set_float32_matmul_precision(precision) while the block runs, the process's setting put back after; None
    leaves it as it is. The one home of that setting for train, evaluate, decode and the bench."""
    check_matmul_precision(precision)
    if precision is None:
        yield
        return
    # torch keeps the setting twice: the string set_float32_matmul_precision sets, and the per-backend switches it
    # writes (torch.backends.mkldnn.matmul.fp32_precision, ...). Both are put back. Where the process set those
    # switches directly, torch refuses to read the string (it then stands for nothing).
    switches = list(_matmul_switches().values())
    before = [switch.fp32_precision for switch in switches]
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:
        legacy = None
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        for switch, value in zip(switches, before):
            # A switch reads its parent's value where it inherits it ("none"); put back as "none" where that reads
            # the same, so that it follows its parent again (torch.backends.fp32_precision set later, say).
            switch.fp32_precision = "none"
            if switch.fp32_precision != value:
                switch.fp32_precision = value


def matmul_precision_in_force() -> str:
    """The process's float32 matmul precision: a word of MATMUL_PRECISIONS, or, where the process set torch's
    per-backend switches itself (torch then refuses to summarise them in a word), those switches, e.g.
    "mkldnn-bf16.cuda-tf32"."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return ".".join(f"{name}-{switch.fp32_precision}" for name, switch in _matmul_switches().items())


def matmul_precision_record(device: torch.device) -> tuple[str, str]:
    """(the float32 matmul precision in force, what it does on ``device`` or "" at "highest"), for the outputs of
    evaluate, decode and the bench; read while the precision is in force."""
    precision = matmul_precision_in_force()
    return precision, "" if precision == "highest" else matmul_precision_note(device, precision)


def matmul_precision_note(device: torch.device, precision: str | None) -> str:
    """What a float32 matmul precision does on ``device``, for a log or report line ("" when None); read while the
    precision is in force."""
    if precision is None:
        return ""
    if device.type != "cpu" or precision == "highest":
        return f"float32 matmul precision {precision}"
    return (f"float32 matmul precision {precision} (the cpu backend's products in bfloat16: "
            f"{'yes' if _cpu_bf16_products() else 'no'})")


def unavailable_reason(name: str, device: torch.device | str | None = None) -> str | None:
    """Why backend ``name`` cannot run on ``device`` (default: cuda if present, else cpu), or None if it can."""
    name = check_backend_name(name, "the name argument")
    if name == "auto":
        return None
    device = resolve_device("auto") if device is None else torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # Asked here, not on every call: a call's tensors are on a device that exists.
        return "no CUDA device here (torch.cuda.is_available() is False)"
    return _unavailable(name, device)


def _unavailable(name: str, device: torch.device) -> str | None:
    """unavailable_reason for a checked backend name (not "auto") and a torch.device: what resolve asks on every
    call, without the argument checks."""
    module, import_error = _load(name)
    if module is None:
        return import_error
    return module.unavailable_reason(device)


def implements(name: str, op: str) -> bool:
    """Whether backend ``name`` implements ``op`` at all (itself, or a layer through its cell in the reference time
    loop), whatever its limits say about a given call; False when the backend cannot be imported."""
    module = _load(check_backend_name(name, "the name argument"))[0]
    if module is None:
        return False
    return op in module.OPS or _LAYER_FROM_CELL.get(op) in module.OPS


def unserved_ops(name: str, ops) -> list[str] | None:
    """Those of ``ops`` that backend ``name`` serves in no way (not itself, not through its cell in the reference time
    loop, not as torch's own function; for an op composed of others, the parts it does not serve), limits aside: what
    a call pinned to it would be refused on whatever its arguments. None when the backend cannot be imported here
    (its ops unknown); [] for auto."""
    name = check_backend_name(name, "the name argument")
    if name == "auto":
        return []
    if _load(name)[0] is None:
        return None

    def missing(op: str) -> list[str]:  # an op built of others is missing its parts that are missing
        if implements(name, op) or op in _TORCH_SERVES:
            return []
        return [lost for part in _COMPOSED[op] for lost in missing(part)] if op in _COMPOSED else [op]
    return list(dict.fromkeys(part for op in ops for part in missing(op)))


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: cuda if present, else cpu) here, in BACKEND_NAMES's order (auto's
    choice per op and call is resolve's); none for a CUDA device on a machine without one."""
    return [name for name in BACKEND_NAMES if unavailable_reason(name, device) is None]


def set_backend(name: str | None) -> None:
    """Set the process-wide backend; ``None`` clears it (back to the environment variable or auto)."""
    global _global_choice
    _global_choice = None if name is None else check_backend_name(name, "set_backend")


def get_backend() -> str:
    """The backend name in effect here when no ``backend=`` argument is given (may be ``"auto"``)."""
    stack = getattr(_context, "stack", None)
    if stack:
        return stack[-1]
    if _global_choice is not None:
        return _global_choice
    env = os.environ.get(ENV_VAR)
    if env:
        return check_backend_name(env, f"environment variable {ENV_VAR}")
    return "auto"


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager selecting ``name`` for the ops called inside it, in this thread."""
    name = check_backend_name(name, "use_backend")
    if not hasattr(_context, "stack"):
        _context.stack = []
    _context.stack.append(name)
    try:
        yield
    finally:
        _context.stack.pop()


def _implementation(name: str, op: str, args: tuple, active: frozenset, cell_loop: bool = True,
                    layout: str | None = None) -> tuple[Callable | None, str | None]:
    """The backend's implementation of ``op`` and the limit it hits on ``args`` (None if it serves), under the
    transforms ``active`` around the call (s2s_fast.transforms), with ``layout`` the limit of its tensors' layout
    (_layout_limit) on kernels of the backend's own; without ``cell_loop``, only an implementation of ``op`` itself,
    not the reference time loop around the backend's cell."""
    module = _load(name)[0]
    impl = module.OPS.get(op)
    if name == "reference":
        layout = None  # torch's own ops, whatever the layout
    if impl is not None:
        return impl, _transform_limit(name, op, args, active) or layout or _own_limit(module, op, args)
    if op in _TORCH_SERVES:
        return _load("reference")[0].OPS[op], None
    if op in _COMPOSED:
        missing = [part for part in _COMPOSED[op] if part not in module.OPS and part not in _TORCH_SERVES]
        if missing:
            return None, f"it does not implement {', '.join(missing)}, which {op} is built of"
        return functools.partial(_load("reference")[0].OPS[op], backend=name), None
    if not cell_loop and op in _LAYER_FROM_CELL:
        return None, f"it does not implement {op} itself (only its cell)"
    cell_op = _LAYER_FROM_CELL.get(op)
    if cell_op is None or cell_op not in module.OPS:
        return None, f"it does not implement {op}"
    if op == "lstm_layer" and args[9] is not None:
        return None, f"it does not implement {op} itself, and its {cell_op} cannot run a projected LSTM (weight_hr)"
    cell = module.OPS[cell_op]
    limit = (_transform_limit(name, cell_op, args, active) or layout
             or _own_limit(module, cell_op, _first_step_cell_args(cell_op, args)))
    return functools.partial(_load("reference")[0].OPS[op], cell=cell), limit


def runs_reference_layer(op: str, impl: Callable) -> bool:
    """Whether ``impl`` (from resolve) runs a layer op as the reference's time loop around a backend's cell, which
    keeps the padding and empty rows' states out itself (reference.time_loop.without_padding)."""
    return isinstance(impl, functools.partial) and impl.func is _load("reference")[0].OPS.get(op)


def _own_limit(module, op: str, args: tuple) -> str | None:
    """The limit the backend's own check for ``op`` (its LIMITS) finds on ``args``, None where it serves them."""
    limit = getattr(module, "LIMITS", {}).get(op)
    return limit(*args) if limit is not None else None


def _transform_limit(name: str, op: str, args: tuple, active: frozenset) -> str | None:
    """Why the backend ``name`` cannot serve its own ``op`` under the torch.func transforms or forward-mode AD
    ``active`` around a call with ``args`` (see BACKWARD_ONLY), None where it can."""
    if not active:
        return None
    if name in BACKWARD_ONLY and ("grad" in active or "jvp" in active):
        return ("its kernels' derivatives are autograd's backward alone: no torch.func.grad, vjp or jacrev and no "
                "forward-mode derivative (torch.func.jvp, jacfwd, torch.autograd.forward_ad) through them; the "
                "reference serves these (auto passes over this backend)")
    if name == "aten" and op in ATEN_UNBATCHED and "vmap" in active:
        return ("torch.func.vmap has no batching rule for the torch op behind it (torch.nn's LSTM, GRU and LSTMCell "
                "fail there too); the reference serves it (auto passes over this backend)")
    if name == "aten" and op == "lstm_layer" and "jvp" in active and args[0].device.type == "cpu" and \
            args[0].dtype != torch.float64:
        return ("torch's CPU LSTM layer below float64 is oneDNN's, which has no forward-mode derivative "
                "(torch.func.jvp, jacfwd, torch.autograd.forward_ad); the reference serves it (auto passes over this "
                "backend)")
    return None


def _layout_limit(args: tuple) -> str | None:
    """Why no backend but the reference serves a call with ``args``: a tensor among them that is not dense (sparse,
    mkldnn), which the compiled kernels and torch's RNN ops cannot read (torch.nn.Linear, and the reference, take a
    sparse input); None where every tensor is strided."""
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.layout != torch.strided:
            return f"its kernels take dense (strided) tensors, got a {str(arg.layout).removeprefix('torch.')} one"
    return None


def _first_step_cell_args(cell_op: str, layer_args: tuple) -> tuple:
    """The cell arguments of a layer call's first step (input [T, B, I] -> its step 0, [B, I]; zeros when T is 0),
    for asking a backend's cell limit about a layer call it would serve in the reference time loop."""
    input = layer_args[0]
    first = input[0] if input.shape[0] > 0 else input.new_zeros(input.shape[1:])
    return (first,) + tuple(layer_args[1:_CELL_ARG_COUNT[cell_op]])


def resolve(op: str, device: torch.device, args: tuple, backend: str | None = None) -> tuple[str, Callable]:
    """Pick the backend for one call of ``op`` on tensors of ``device``; returns (name, implementation).

    ``args`` are the validated functional arguments (without ``backend``), passed to the limit checks.
    """
    name = get_backend() if backend is None else check_backend_name(backend, "the backend argument")
    active = transforms.active(args)  # asked once a call: resolve runs on every op call
    layout = _layout_limit(args) if name != "reference" else None  # the reference runs torch's ops on any layout
    if name != "auto":
        reason = _unavailable(name, device)
        if reason is None:
            impl, limit = _implementation(name, op, args, active, layout=layout)
            if limit is None:
                return name, impl
            reason = limit
        raise BackendError(f"backend {name!r} cannot serve {op} on {device.type}: {reason}")
    reasons = []
    for candidate, cell_loop in _auto_candidates(op, device, args):
        reason = _unavailable(candidate, device)
        if reason is not None and candidate == "cpu" and device.type == "cpu":
            _tell_once_cpu_kernels_missing(reason)
        if reason is None:
            module = _load(candidate)[0]
            if cell_loop and op in module.OPS:
                continue  # its own layer was tried (and refused) already
            if op in _COMPOSED and (op not in module.OPS or candidate == "reference"):
                continue  # composed on each op's auto choice below, not on this backend's (or the reference's) ops
            impl, limit = _implementation(candidate, op, args, active, cell_loop, layout)
            if limit is None:
                return candidate, impl
            reason = limit
        reasons.append(f"{candidate}{' (cell loop)' if cell_loop else ''}: {reason}")
    if op in _COMPOSED:
        return "auto", functools.partial(_load("reference")[0].OPS[op], backend="auto")
    raise BackendError(f"no backend can serve {op} on {device.type}: " + "; ".join(reasons))


_told_cpu_kernels_missing = False


def _tell_once_cpu_kernels_missing(reason: str) -> None:
    """A warning, once a process, that auto passes over the cpu backend on CPU tensors because its kernels are not
    built (an install without a working C++ compiler, which pip does not show): they run on aten and the reference."""
    global _told_cpu_kernels_missing
    if not _told_cpu_kernels_missing:
        _told_cpu_kernels_missing = True
        # Pointed at the first caller outside the package, however deep in it the call was resolved.
        package, frame, level = os.path.dirname(os.path.abspath(__file__)), sys._getframe(0), 1
        while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
            frame, level = frame.f_back, level + 1
        warnings.warn(f"s2s_fast: CPU tensors run on the aten and reference backends, slower: {reason}",
                      stacklevel=level)


def _weights(op: str, args: tuple) -> tuple:
    """(weight_ih, weight_hh) of a call of a layer or cell op (args as in resolve)."""
    first = 3 if op.startswith("lstm") else 2
    return args[first], args[first + 1]


def _batch_and_hidden(op: str, args: tuple) -> tuple[int, int]:
    """(B, H) of a call of a layer or cell op (args as in resolve), for the measured tables' rows."""
    return args[1].shape[0], _weights(op, args)[1].shape[0] // _GATES[op]


def cudnn_measured_faster(op: str, args: tuple) -> bool:
    """Whether a row of CUDNN_FASTER covers this call of a layer or cell op (args as in resolve). Never under
    torch.compile: testing a traced size against the rows' ranges fails Dynamo, and aten's layers step aside there."""
    if op not in _GATES or torch.compiler.is_compiling():
        return False
    batch, hidden = _batch_and_hidden(op, args)
    return any(op == row_op and args[1].dtype == dtype and batch in batches and hidden in hiddens
               for row_op, dtype, batches, hiddens in CUDNN_FASTER)


def _cpuinfo_field(name: str) -> str:
    """The first value of field ``name`` in the kernel's /proc/cpuinfo, "" where there is none (or no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


@functools.lru_cache(maxsize=None)
def cpu_vendor() -> str:
    """The CPU's vendor as the kernel names it (``GenuineIntel``, ``AuthenticAMD``, ...), "" where unknown."""
    return _cpuinfo_field("vendor_id")


# Read once, here: auto reads it under torch.compile too, where a file read would break the graph.
_CPU_HAS_AVX512 = "avx512f" in _cpuinfo_field("flags").split()


def cpu_has_avx512() -> bool:
    """Whether the CPU has AVX-512 (AVX512F), the test csrc/cpu/products.h's cpu_has_avx512 makes for the weight
    gradients' route: oneDNN's float32 products were measured ahead of MKL's only on such CPUs. Read from Linux's
    /proc/cpuinfo; False where there is none (other systems: auto then routes as on a CPU without AVX-512, while
    the C++ test asks the CPU itself)."""
    return _CPU_HAS_AVX512


def _cpu_prefers_aten(op: str, args: tuple) -> bool:
    """Whether auto tries aten before cpu for this CPU call: no gradient recorded and op in
    CPU_INFERENCE_PREFERS_ATEN (but for CPU_BF16_INFERENCE_PREFERS_CPU's calls), or a gradient recorded and either op
    in CPU_ATEN_FASTER_TRAINING_OFF_INTEL on a CPU that is not Intel's (but for CPU_LAYER_WIDE_INPUT's and
    CPU_LAYER_PADDED's calls) or a row of CPU_ATEN_FASTER_TRAINING covering it; but not for a training call
    CPU_BF16_PREFERS_CPU covers."""
    if not _records_gradient(args):
        return op in CPU_INFERENCE_PREFERS_ATEN and not _bf16_inference_pays(op, args)
    if op not in _GATES or torch.compiler.is_compiling():
        # aten steps aside under torch.compile anyway, and reading the thread count or testing a traced size against
        # the table's ranges would break the graph or guard on the size.
        return False
    if _bf16_products_pay(op, args):
        return False
    if op in CPU_ATEN_FASTER_TRAINING_OFF_INTEL and cpu_vendor() != "GenuineIntel":
        return not _cpu_layer_pays(op, args)
    batch, hidden = _batch_and_hidden(op, args)
    threads = torch.get_num_threads()
    return any(op == row_op and threads >= fewest and batch in batches and hidden in hiddens
               for row_op, fewest, batches, hiddens in CPU_ATEN_FASTER_TRAINING)


def _cpu_layer_pays(op: str, args: tuple) -> bool:
    """Whether a training call of a layer op goes to the cpu layer before aten off Intel's CPUs: CPU_LAYER_WIDE_INPUT's
    width and rows or CPU_LAYER_PADDED's share of padding and work per step, float32, with the cpu backend's products
    through oneDNN."""
    input, hidden = args[0], _batch_and_hidden(op, args)[1]
    steps, batch, width = input.shape
    wide = op in CPU_LAYER_WIDE_INPUT and width >= CPU_LAYER_WIDE_INPUT[op][0] * hidden and \
        steps * batch >= CPU_LAYER_WIDE_INPUT[op][1]
    if not wide and not _cpu_layer_padding_pays(op, args):
        return False
    return _cpu_products_through_onednn(input.dtype)


def _step_work(op: str, args: tuple) -> int:
    """Multiply-adds a step of a layer call, or of a cell call (args as in resolve): B x gates*H x (I + R), R the width
    of the recurrent input (H, or an LSTM projection's P), the measure of the work tables (CPU_ONEDNN_FROM_WORK,
    CPU_LAYER_PADDED, CPU_BF16_PREFERS_CPU, CPU_BF16_INFERENCE_PREFERS_CPU)."""
    weight_ih, weight_hh = _weights(op, args)
    return args[1].shape[0] * weight_ih.shape[0] * (weight_ih.shape[1] + weight_hh.shape[1])


def _cpu_layer_padding_pays(op: str, args: tuple) -> bool:
    """CPU_LAYER_PADDED's test of a layer call (lengths on the CPU: a host read of B values; not under torch.func's
    transforms, where lengths may be batched)."""
    lengths = args[7 if op == "lstm_layer" else 6]
    if op not in CPU_LAYER_PADDED or lengths is None or lengths.device.type != "cpu" or \
            torch._C._are_functorch_transforms_active():
        return False
    share, work = CPU_LAYER_PADDED[op]
    steps, batch = args[0].shape[0], _batch_and_hidden(op, args)[0]
    if _step_work(op, args) < work or steps * batch == 0:
        return False
    return steps * batch - int(lengths.sum()) >= share * steps * batch


def _cpu_products_through_onednn(dtype: torch.dtype, compiling: bool = False) -> bool:
    """Whether the cpu backend's products in this dtype go through oneDNN: float32, its library chosen oneDNN
    (s2s_fast.cpu.products_library) and torch.backends.mkldnn on (not read while compiling: a traced call takes the
    library as chosen)."""
    if dtype != torch.float32:
        return False
    module = _load("cpu")[0]
    if module is None or module.extension_module is None or module.products_library() != "onednn":
        return False
    return compiling or torch.backends.mkldnn.enabled


def _bf16_products_pay(op: str, args: tuple) -> bool:
    """CPU_BF16_PREFERS_CPU's test of a training call (not under torch.compile): float32, off Intel's CPUs, the work
    per step, and the cpu backend's products in bfloat16 now."""
    if op not in CPU_BF16_PREFERS_CPU or args[0].dtype != torch.float32 or cpu_vendor() == "GenuineIntel":
        return False
    return _step_work(op, args) >= CPU_BF16_PREFERS_CPU[op] and _cpu_bf16_products()


def _bf16_inference_pays(op: str, args: tuple) -> bool:
    """CPU_BF16_INFERENCE_PREFERS_CPU's test of a call that records no gradient (not under torch.compile, where the
    thread count and the sizes are not read): float32, the work per step and thread, and the cpu backend's products in
    bfloat16 now."""
    if op not in CPU_BF16_INFERENCE_PREFERS_CPU or args[0].dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    return _step_work(op, args) >= CPU_BF16_INFERENCE_PREFERS_CPU[op] * torch.get_num_threads() and \
        _cpu_bf16_products()


def _cpu_bf16_products() -> bool:
    """Whether the cpu backend is built and its float32 products through oneDNN run in bfloat16 now."""
    module = _load("cpu")[0]
    return module is not None and module.bf16_products()


def _cpu_onednn_pays(op: str, args: tuple) -> bool:
    """Whether auto tries cpu for this call of an op of CPU_ONEDNN_FROM_WORK: float32, the cpu backend's products
    through oneDNN (torch.backends.mkldnn on), and the work that table asks (on a CPU without AVX-512,
    CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512's, or CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512's for large weights). Under
    torch.compile the sizes are tested as in eager (Dynamo treats a symbolic size as an int here and guards on the
    comparison: a size across a threshold recompiles), but the thread count is not read (that would break the
    graph): large weights then go to cpu at any size, as at several threads."""
    if args[0].dtype != torch.float32:
        return False
    work = args[0].numel() * args[1].shape[0] if op == "linear" else _step_work(op, args)
    compiling = torch.compiler.is_compiling()
    if cpu_has_avx512():
        least = CPU_ONEDNN_FROM_WORK[op]
    else:
        weights = args[1].numel() if op == "linear" else sum(w.numel() for w in _weights(op, args))
        elements, least_with_large_weights = CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512
        if weights < elements:
            least = CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512[op]
        elif compiling or torch.get_num_threads() > 1:  # torch's default thread count is several
            least = 0
        else:
            least = least_with_large_weights
    if work < least:
        return False
    return _cpu_products_through_onednn(args[0].dtype, compiling)


def _records_gradient(args: tuple) -> bool:
    """Whether autograd records a call with these arguments."""
    if not torch.is_grad_enabled():
        return False
    for a in args:  # a loop, not any() over a generator: this runs on every call under auto
        if isinstance(a, torch.Tensor) and a.requires_grad:
            return True
    return False


def _triton_attention_first(op: str, device: torch.device, args: tuple) -> bool:
    """Whether auto tries triton before cuda for this call (args as in resolve): an additive attention call on a GPU
    with at least TRITON_ATTENTION_FROM_WORK's work for its pass."""
    if op != "additive_attention" or device.type != "cuda":
        return False
    query_proj, key_proj = args[0], args[1]  # [B, Tq, A], [B, Tk, A]
    work = query_proj.shape[0] * query_proj.shape[1] * key_proj.shape[1] * key_proj.shape[2]
    return work >= TRITON_ATTENTION_FROM_WORK[_records_gradient(args)]


def _auto_candidates(op: str, device: torch.device, args: tuple) -> list[tuple[str, bool]]:
    """(backend, whether a cell loop may serve) in auto's order: for a layer op, every fused backend's own layer
    before any fused backend's cell in the reference time loop (a fused layer does the whole sequence's work in
    its kernels; a cell loop only each step's), then the reference."""
    fused = list(_AUTO_FUSED.get(device.type, ()))
    if _triton_attention_first(op, device, args) and fused.index("triton") > fused.index("cuda"):
        fused.remove("triton")
        fused.insert(fused.index("cuda"), "triton")
    if device.type == "cuda" and cudnn_measured_faster(op, args):
        fused.insert(0, "aten")
    if "cpu" in fused and op in CPU_ONEDNN_FROM_WORK and not _cpu_onednn_pays(op, args) and \
            (_records_gradient(args) or not _bf16_inference_pays(op, args)):
        fused.remove("cpu")
    if "aten" in fused and "cpu" in fused and device.type == "cpu" and _cpu_prefers_aten(op, args):
        fused.remove("aten")
        fused.insert(fused.index("cpu"), "aten")
    if op not in _LAYER_FROM_CELL:
        return [(name, False) for name in fused] + [("reference", False)]
    return [(name, False) for name in fused] + [(name, True) for name in fused] + [("reference", False)]


# Import every backend up front: an import inside a torch.compile'd region would break its graph.
for _name in BACKEND_NAMES:
    _load(_name)
