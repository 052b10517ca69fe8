"""Pieces shared by the Triton kernels: float32 activations, dot precision, block sizes, launch helpers, and the
limit check every RNN op shares (rnn_limit)."""

from __future__ import annotations

import contextlib
import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from . import interpreter_threads
from .step_graphs import launch, replay_by_default, run_steps

# Programs per launch that keep an H100's 132 multiprocessors busy.
ENOUGH_PROGRAMS = 128
# Offsets inside one batch row (attention) or one time step (RNN ops) are 32-bit.
INDEX_LIMIT = 2**31


@triton.jit
def tanh(x, FAST: tl.constexpr):
    """tanh of a float32 block; FAST uses the GPU's one-instruction approximation (max rel. error ~2^-11)."""
    if FAST:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        # exp of a non-positive argument cannot overflow; near 0 the odd series keeps the error relative.
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        x2 = x * x
        series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))))
        return tl.where(tl.abs(x) < 0.2, series, tl.where(x < 0.0, -t, t))


@triton.jit
def step_at(index, steps, BACKWARDS_IN_TIME: tl.constexpr):
    """The time step (int64) a persistent RNN kernel runs at loop index ``index``: index itself, or counted from
    the end when BACKWARDS_IN_TIME (a reverse layer's forward, a forward layer's backward)."""
    if BACKWARDS_IN_TIME:
        step = tl.cast(steps - 1 - index, tl.int64)
    else:
        step = tl.cast(index, tl.int64)
    return step


@triton.jit
def wait_for_batch_tile(arrivals_ptr, target):
    """A barrier across the programs of one batch tile (the spread persistent RNN kernels): count this program's
    arrival at ``arrivals_ptr`` (int32, zeroed before the launch) and wait until ``target`` have arrived. Every
    program of the launch must be resident at once (the launcher keeps the grid within the multiprocessors)."""
    # Every thread of the program has stored its part of the step before the program arrives (release), and none
    # reads what the others stored before all have arrived (acquire).
    tl.debug_barrier()
    tl.atomic_add(arrivals_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(arrivals_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


def interpreting() -> bool:
    """Whether this package's kernels were defined under TRITON_INTERPRET=1 (they then run through numpy)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return False
    return isinstance(sigmoid, InterpretedFunction)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision for ``dtype``: float32 follows torch's TF32 switch for matmuls, like the reference."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def block_size(size, low: int, high: int) -> int:
    """The power of two covering ``size``, clamped to [low, high] (``low`` a power of two). Comparisons only, no
    int(): under torch.compile with a symbolic size this guards on the bucket (size <= 32), not the size."""
    block = low
    while block < high and size > block:
        block *= 2
    return min(block, high)


# The RNN layers' persistent schedule runs every step of a batch tile in one program, so each program streams all
# of W_hh per step; the per-step schedule spreads W_hh over (batch tiles x hidden tiles) programs but pays a launch
# per step. A multiprocessor reads on the order of 100 GB/s from L2 and a launch from Python costs some
# microseconds, so W_hh up to about 512 KiB streams in about the time of a launch: the crossover is an estimate from
# that model, unmeasured: to be set from s2s-fast bench's "triton: persistent" and "triton: per step" rows on a GPU.
PERSISTENT_MAX_WEIGHT_BYTES = 512 * 1024


def persistent_schedule(gates: int, hidden: int, dtype: torch.dtype, steps=None) -> bool:
    """Whether an RNN layer runs as one persistent launch (True) or one launch per step (False) by default.

    A symbolic number of steps (torch.compile with dynamic shapes) always gets the persistent schedule: the per-step
    one is a Python loop over T, which pins T, so a compiled model would recompile for every new sequence length
    (scripts/check_symbolic_sizes.py shows which sizes each schedule pins)."""
    if isinstance(steps, torch.SymInt):
        return True
    return gates * hidden * hidden * dtype.itemsize <= PERSISTENT_MAX_WEIGHT_BYTES


def spread_by_default(input: torch.Tensor, hx: torch.Tensor) -> bool:
    """Whether a layer call's default schedule is the spread one: on a GPU, wherever it serves (spread_limit).

    The first GPU run (H200, bfloat16, T=64, 2026-12-04; benchmarks/results/gpu-check-h200-2026-12-04) timed it
    ahead of the previous default at every size but the smallest: LSTM forward B=8 H=256 0.62 ms against the
    persistent schedule's 4.81 (its ceil(B/16) programs stream all of W_hh every step), B=64 H=512 0.44 against the
    per-step one's 0.60, B=256 H=1024 2.23 against 3.68, B=1 H=512 0.49 against 0.46; forward+backward likewise
    (2.03 against 8.54, 1.74 against 1.93, 6.36 against 8.30); the GRU layer too (B=8 H=256 0.53 against 3.74).
    Per step + graph was faster at B=8 (0.55 against 0.62; the GRU 0.27 against 0.53), but it replays only from a
    shape's third call, which training with varying lengths seldom makes."""
    return input.device.type == "cuda" and torch.cuda.is_available() and spread_limit(input, hx) is None


def layer_schedule(gates: int, input: torch.Tensor, hx: torch.Tensor, persistent, graph, spread) -> tuple:
    """(persistent, graph, spread) of an RNN layer call, each forced or None for the default's choice: spread by
    spread_by_default unless a schedule is forced, else persistent by persistent_schedule, graph by
    step_graphs.replay_by_default (a schedule is forced when persistent or graph is given). A forced spread needs
    spread_limit's leave (else a ValueError saying why)."""
    if spread is None:
        spread = persistent is None and graph is None and spread_by_default(input, hx)
    elif spread:
        reason = spread_limit(input, hx)
        if reason is not None:
            raise ValueError(reason)
    if spread:
        persistent = True
    if persistent is None:
        persistent = persistent_schedule(gates, hx.shape[1], input.dtype, input.shape[0])
    if graph is None:
        graph = not persistent and replay_by_default(input, input.shape[0])
    return bool(persistent), bool(graph), bool(spread)


def persistent_blocks(batch: int, hidden: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K) of the persistent RNN kernels: the smallest batch tile tl.dot takes (16), for
    the most programs, and the hidden and K tiles of the per-step gate-GEMM kernels."""
    _, block_h, block_k = gemm_blocks(batch, hidden, dtype)
    return 16, block_h, block_k


# Programs the spread schedule may launch where no GPU answers (the Triton interpreter): an H100's multiprocessors.
SPREAD_PROGRAMS_WITHOUT_GPU = 132


def spread_programs(device: torch.device) -> int:
    """How many programs of the spread schedule are sure to be resident at once: one per multiprocessor."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return SPREAD_PROGRAMS_WITHOUT_GPU


def spread_blocks(batch: int, hidden: int, dtype: torch.dtype, programs: int) -> Optional[tuple[int, int, int]]:
    """(BLOCK_B, BLOCK_H, BLOCK_K) of the spread persistent RNN kernels: the narrowest hidden tiles, then the
    smallest batch tiles, whose grid fits ``programs`` (W_hh spread over the most programs), or None when even
    64 x 64 tiles need more programs than that."""
    for block_h in (16, 32, 64):
        for block_b in (16, 32, 64):
            if triton.cdiv(batch, block_b) * triton.cdiv(hidden, block_h) <= programs:
                return block_b, block_h, 64 if dtype.itemsize == 2 else 32
    return None


def spread_limit(input: torch.Tensor, hx: torch.Tensor, *_, **__) -> Optional[str]:
    """None when the spread persistent schedule serves a layer call (arguments as the layer's), else why not."""
    if input.device.type == "cpu" and not interpreter_threads.active():
        return ("the spread schedule's programs wait for each other between steps, so it needs them all running at "
                "once (a GPU); the Triton interpreter runs them one after another (tests run it under "
                "s2s_fast.triton.interpreter_threads.concurrent_programs)")
    programs = spread_programs(input.device)
    if spread_blocks(hx.shape[0], hx.shape[1], input.dtype, programs) is None:
        return (f"the spread schedule runs one program per multiprocessor at most ({programs}); B x H needs more "
                "even in 64 x 64 tiles")
    return None


def spread_arrivals(weight_hh: torch.Tensor, batch: int, hidden: int) -> torch.Tensor:
    """The spread schedule's zeroed int32 arrival counters, one per batch tile (a new set per launch)."""
    block_b, _, _ = spread_blocks(batch, hidden, weight_hh.dtype, spread_programs(weight_hh.device))
    return torch.zeros(triton.cdiv(batch, block_b), dtype=torch.int32, device=weight_hh.device)


def gemm_blocks(batch: int, hidden: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_B, BLOCK_H, BLOCK_K) of the gate-GEMM kernels: tl.dot needs 16 at least on every side.

    Each program streams a [gates * BLOCK_H, K] slice of the weights, which bounds a step's time; 16-wide hidden
    tiles (twice the programs, half the slice each) when 32-wide ones would leave most of a GPU's multiprocessors
    idle.
    """
    block_b = block_size(batch, 16, 32)
    wide_programs = triton.cdiv(batch, block_b) * triton.cdiv(hidden, 32)
    block_h = block_size(hidden, 16, 32 if wide_programs >= ENOUGH_PROGRAMS else 16)
    return block_b, block_h, 64 if dtype.itemsize == 2 else 32


def step_order(steps: int, reverse: bool) -> range:
    """The time steps of a layer in the order its forward runs them."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


def launch_rnn_layer(kernel, tensors: dict, buffers: tuple, *, reverse: bool, persistent: bool, precision: str,
                     backward: bool, spread: bool = False) -> None:
    """Launch an RNN layer kernel (``wrap_triton``-wrapped) in its schedule on ``tensors`` (by name; sizes and
    strides read from them, so a step graph's static copies serve as the caller's tensors do): once over the batch
    tiles (persistent), once over (batch tiles x hidden tiles) (persistent and spread: ``tensors["barrier"]`` holds
    zeroed int32 arrival counters, one per batch tile), or once per step over (batch tiles x hidden tiles), the
    backward in reverse step order. Each launch goes through step_graphs.launch, so a stand-in step graph can
    record it.

    The kernel's arguments: forward ``input_gates, weight_hh, bias_hh, lengths, states_h, *buffers, barrier, step,
    steps, batch, hidden, W_hh's strides, b_hh's stride``; backward ``grad_output, weight_hh, lengths, *buffers,
    barrier, step, steps, batch, hidden, grad_output's strides (b, t, h), W_hh's strides``; an absent bias, lengths
    or barrier (None) passes another pointer, never read. Constexprs ``PERSISTENT``, ``SPREAD``, ``REVERSE``,
    ``HAS_BIAS_HH`` (forward), ``HAS_NEXT`` (backward), ``HAS_LENGTHS``, ``DOT_PRECISION`` and the blocks.
    """
    weight_hh, lengths = tensors["weight_hh"], tensors["lengths"]
    flags = dict(REVERSE=int(reverse), HAS_LENGTHS=lengths is not None, DOT_PRECISION=precision)
    if backward:
        grad_output = tensors["grad_output"]
        steps, batch, hidden = grad_output.shape
        head = (grad_output, weight_hh, lengths if lengths is not None else tensors["grad_h"])
        sizes = (batch, hidden, grad_output.stride(1), grad_output.stride(0), grad_output.stride(2),
                 *weight_hh.stride())
    else:
        bias_hh, states_h = tensors["bias_hh"], tensors["states_h"]
        steps, batch, hidden = tensors["output"].shape
        head = (tensors["input_gates"], weight_hh, bias_hh if bias_hh is not None else weight_hh,
                lengths if lengths is not None else states_h, states_h)
        sizes = (batch, hidden, *weight_hh.stride(), bias_hh.stride(0) if bias_hh is not None else 0)
        flags["HAS_BIAS_HH"] = bias_hh is not None
    barrier = tensors.get("barrier")
    args = head + tuple(tensors[name] for name in buffers) + (barrier if barrier is not None else weight_hh,)
    if persistent:
        has_next = dict(HAS_NEXT=True) if backward else {}
        if spread:
            block_b, block_h, block_k = spread_blocks(batch, hidden, weight_hh.dtype, spread_programs(weight_hh.device))
            grid = (triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))
        else:
            block_b, block_h, block_k = persistent_blocks(batch, hidden, weight_hh.dtype)
            grid = (triton.cdiv(batch, block_b),)
        launch(functools.partial(kernel[grid], *args, 0, steps, *sizes, PERSISTENT=True, SPREAD=spread, **flags,
                                 **has_next, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k))
        return
    block_b, block_h, block_k = gemm_blocks(batch, hidden, weight_hh.dtype)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(hidden, block_h))
    order = step_order(steps, reverse)
    for index, step in enumerate(reversed(order) if backward else order):
        has_next = dict(HAS_NEXT=index > 0) if backward else {}
        launch(functools.partial(kernel[grid], *args, step, steps, *sizes, PERSISTENT=False, SPREAD=False, **flags,
                                 **has_next, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k))


def run_rnn_layer(name: str, kernel, tensors: dict, buffers: tuple, *, reverse: bool, persistent: bool, spread: bool,
                  graph: bool, backward: bool, written: tuple, fresh: tuple) -> None:
    """One pass of an RNN layer (``name``: op and pass) on ``tensors`` in its schedule: launch_rnn_layer's launches
    (arguments as there), on the tensors' GPU, with the spread schedule's arrival counters, and replayed through
    step_graphs when ``graph`` asks for it in the per-step schedule (``written``, ``fresh``: as StepGraphs.run)."""
    weight_hh = tensors["weight_hh"]
    _, batch, hidden = tensors["grad_output" if backward else "output"].shape
    spread = persistent and spread
    tensors = dict(tensors, barrier=spread_arrivals(weight_hh, batch, hidden) if spread else None)
    precision = dot_precision(weight_hh.dtype)
    launch_steps = functools.partial(launch_rnn_layer, kernel, buffers=buffers, reverse=reverse, persistent=persistent,
                                     spread=spread, precision=precision, backward=backward)
    with device_guard(weight_hh):
        run_steps((name, reverse, persistent, precision), launch_steps, tensors, graph=graph and not persistent,
                  written=written, fresh=fresh)


def device_guard(tensor: torch.Tensor):
    """Launch on the tensor's GPU even when another device is current."""
    return torch.cuda.device(tensor.device) if tensor.device.type == "cuda" else contextlib.nullcontext()


def rnn_limit(input, hx, weight_ih, weight_hh):
    """None when the gate-GEMM kernels serve a cell call, or a layer call with ``input`` one step of it."""
    if input.dtype == torch.float64:
        return "float64 is not served (the kernels compute in float32); the reference backend serves it"
    if input.dtype == torch.bfloat16 and input.device.type == "cpu":
        return ("bfloat16 is not served on the CPU (the Triton interpreter computes bfloat16 dot products "
                "wrongly); use a CUDA device or float16/float32")
    if any(t.numel() == 0 for t in (input, hx, weight_ih, weight_hh)):
        return "empty tensors (a zero-size dimension) are not served; the reference backend serves them"
    step_numels = (input.numel(), weight_ih.numel(), weight_hh.numel(), hx.shape[0] * weight_hh.shape[0])
    if max(step_numels) >= INDEX_LIMIT:
        return "tensors of one step with 2**31 elements or more are not served (32-bit offsets inside a step)"
    return None
