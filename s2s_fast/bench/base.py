"""What every benchmark case shares: the Runner a provider builds, the Case protocol, provider discovery."""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from typing import Callable

import torch

from .. import backends
from ..cuda import compiled as cuda_compiled

# Providers that are not backends of the registry.
COMPILE = "torch.compile"
TORCH_NN = "torch.nn"
GRAPH_SUFFIX = "+cudagraph"
LOW_PRECISION = (torch.float16, torch.bfloat16)


class Unavailable(Exception):
    """A provider cannot run a case on this machine; the message says why."""


def compile_failed(error: Exception) -> Unavailable:
    """torch.compile could not compile the reference here (no C++ compiler, an Inductor error, ...)."""
    text = str(error).strip()
    return Unavailable(f"torch.compile failed here: {type(error).__name__}: {text.splitlines()[0] if text else ''}")


@dataclass
class Runner:
    """One provider prepared on one input set.

    run: one timed call (forward, forward+backward, training step or decoding); returns nothing useful.
    results: outputs (and gradients) by name, compared with the reference's on the same inputs.
    forward_with_graph: the forward alone with autograd recording, returning what keeps the graph alive (for the
        saved-for-backward count); None where the benchmark has no backward.
    owned: tensors that exist whatever the provider does (inputs, parameters, optimizer state), left out of the
        saved-for-backward count; a callable because optimizer state appears after the first step.
    graph_memory_bytes: the peak memory of its CUDA graph's capture above what was allocated before it, where run()
        replays a graph: a replay allocates nothing (the graph's pool was taken at capture), so run()'s own peak
        left the graph's working memory out.
    """

    run: Callable[[], object]
    results: Callable[[], dict]
    forward_with_graph: Callable[[], object] | None
    owned: Callable[[], list]
    note: str | None = None
    first_call_s: float | None = None
    graph_memory_bytes: int | None = None


def tensor_bytes(value) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or a dict/list/tuple of them), each storage counted once."""
    seen = {}

    def visit(item):
        if isinstance(item, torch.Tensor):
            seen[(item.device.type, item.data_ptr())] = item.numel() * item.element_size()
        elif isinstance(item, dict):
            for child in item.values():
                visit(child)
        elif isinstance(item, (list, tuple)):
            for child in item:
                visit(child)

    visit(value)
    return sum(seen.values())


def tensors_in(value) -> list:
    """The tensors in a tensor or a dict/list/tuple of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for child in value.values() for t in tensors_in(child)]
    if isinstance(value, (list, tuple)):
        return [t for child in value for t in tensors_in(child)]
    return []


def backend_providers() -> list[str]:
    """The registry's backends other than the reference, in the order fused backends are reported."""
    return [name for name in reversed(backends.BACKEND_NAMES) if name != "reference"]


def variant_providers(op: str) -> list[str]:
    """"backend: variant" for every forced variant (s2s_fast.backends' VARIANTS) of ``op`` the backends list."""
    names = []
    for backend in backend_providers():
        module = importlib.import_module(f"s2s_fast.{backend}")
        names += [f"{backend}: {name}" for name in getattr(module, "VARIANTS", {}).get(op, {})]
    return names


def variant(provider: str, op: str) -> tuple[str, tuple]:
    """(backend, (implementation, limit)) of a "backend: variant" provider of ``op``."""
    backend, name = provider.split(": ", 1)
    return backend, importlib.import_module(f"s2s_fast.{backend}").VARIANTS[op][name]


def backend_unavailable(name: str, device: torch.device, op: str | None = None, args: tuple | None = None):
    """Raise Unavailable when registry backend ``name`` cannot run (``op`` on ``args``) on ``device``."""
    reason = backends.unavailable_reason(name, device)
    if reason is None and name == "cuda" and cuda_compiled.EMULATED_GPU is not None:
        reason = ("the cuda backend is the CUDA emulation here (S2S_FAST_CUDA_EMULATE): it checks the kernels on the "
                  "CPU, its timings would measure the emulation")
    if reason is not None:
        raise Unavailable(reason)
    if op is not None:
        try:
            backends.resolve(op, device, args, backend=name)
        except RuntimeError as error:
            raise Unavailable(str(error)) from None


def backend_implements(name: str, op: str) -> bool:
    """Whether the (available) backend ``name`` has its own implementation of ``op`` in its OPS table."""
    return op in importlib.import_module(f"s2s_fast.{name}").OPS


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def randn(shape, gen: torch.Generator, device, dtype, scale: float = 1.0) -> torch.Tensor:
    """Normal values drawn on the CPU (the same on every device) and moved to ``device`` in ``dtype``."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device=device, dtype=dtype)


def uniform(shape, gen: torch.Generator, device, dtype, bound: float) -> torch.Tensor:
    return ((torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound).to(device=device, dtype=dtype)


@dataclass
class Case(abc.ABC):
    """One benchmark: a family (what is timed), a direction, sizes, a dtype and a device.

    Subclasses define the providers that apply, how inputs are drawn, how each provider runs, the tokens one call
    processes and the fewest bytes it must move.
    """

    family: str
    direction: str  # "fwd", "fwd_bwd", "train" or "decode"
    sizes: dict
    dtype: torch.dtype
    device: torch.device
    target: str | None = None
    max_rotations: int = 64  # input sets the timing may rotate among

    @property
    def name(self) -> str:
        return f"{self.family}.{self.direction}[" + ",".join(f"{k}={v}" for k, v in self.sizes.items()) + "]"

    @property
    def group(self) -> str:
        return f"{self.family}.{self.direction}"

    @property
    def size_label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.sizes.items())

    @property
    def backward(self) -> bool:
        return self.direction in ("fwd_bwd", "train")

    @abc.abstractmethod
    def providers(self) -> list[str]:
        """Names of the providers that apply to this case, the reference first."""

    @abc.abstractmethod
    def tokens(self) -> int:
        """Tokens one call processes (for tokens per second)."""

    @abc.abstractmethod
    def make_inputs(self, seed: int) -> dict:
        """One input set drawn from ``seed``, on the case's device, shared by all providers."""

    @abc.abstractmethod
    def prepare(self, provider: str, inputs: dict) -> Runner:
        """Build ``provider``'s runner on ``inputs``; raises Unavailable when it cannot run here."""

    @abc.abstractmethod
    def gold(self, inputs: dict) -> Runner:
        """The reference computed in a wider dtype on the same inputs, for results that miss the elementwise
        tolerance (float32 for low-precision cases; float64 for float32 ones)."""

    @abc.abstractmethod
    def min_bytes(self, inputs: dict, results: dict) -> int:
        """The fewest bytes one call must move (see floors.py); ``results`` are the reference's."""

    @abc.abstractmethod
    def working_set_bytes(self) -> int:
        """A rough upper estimate of the memory the reference needs for one call."""
