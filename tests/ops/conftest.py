"""Every backend besides the reference that can run here, for the per-op tests: triton on a GPU or through the Triton
interpreter on the CPU, cuda on a GPU or through the CUDA emulation on the CPU (under two scheduling seeds there), and
aten and cpu for the ops they implement (a test skips a backend without its op: the op of its module test_<op>.py,
or the test's own ``op`` parameter). The reference is the ground truth; the helpers compare forward and every gradient
with it, in float32 and, where the backend runs low precision here, float16/bfloat16 with the
twice-the-reference's-error rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from s2s_fast import backends
from s2s_fast.cuda import compiled as cuda_compiled
from s2s_fast.testing import compare_low_precision_with_reference, compare_with_reference, poison_


@dataclasses.dataclass
class Backend:
    name: str
    device: torch.device
    schedule_seed: str = "0"

    @property
    def interpreted(self) -> bool:
        """The Triton interpreter: slow, so it runs the small shapes only."""
        return self.name == "triton" and self.device.type == "cpu"

    def skip_if_too_big_to_run_here(self, hidden: int) -> None:
        """The Triton interpreter and the CUDA emulation are slow: the interpreter skips large hidden sizes, the
        emulation runs the largest (600 and up) under its first scheduling seed only."""
        if self.interpreted and hidden > 64:
            pytest.skip("a hidden size the Triton interpreter takes minutes over; a GPU runs it")
        if self.name == "cuda" and cuda_compiled.EMULATED_GPU and hidden >= 600 and self.schedule_seed != SEEDS[0]:
            pytest.skip("the largest sizes run under one emulation schedule (CI time)")

    @property
    def weights_summed_in_its_own_order(self) -> tuple:
        """The gradients whose absolute tolerance is taken of their largest magnitude
        (s2s_fast.testing.compare_with_reference): cuDNN's (aten on a GPU) float32 layer weight gradients were 30x the
        reference's own error off float64 on the first GPU run (1.2e-4 where the gradients reach 15; IEEE math, TF32
        off); its outputs and input gradients kept the element-wise tolerance."""
        if self.name == "aten" and self.device.type == "cuda":
            return ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return ()

    @property
    def low_precision(self) -> tuple:
        """The half-precision dtypes the backend runs here: the interpreter's bfloat16 dot products are wrong and
        its float16 ones slow, so on a CPU only the emulated cuda backend runs them."""
        if self.name == "cpu":
            return ()  # float32 and float64 only (its limit)
        if self.device.type == "cuda" or self.name in ("cuda", "aten"):
            return (torch.float16, torch.bfloat16)
        return ()

    def skip_unless_served(self, op: str, args: dict, dtype=torch.float32, **options) -> None:
        """Skip (saying why) when the backend's limits refuse this call, training included."""
        trained = {k: (v.to(self.device, dtype).requires_grad_() if isinstance(v, torch.Tensor) and
                       v.is_floating_point() else v) for k, v in args.items()}
        arguments = tuple(trained.values()) + tuple(options.values())
        try:
            backends.resolve(op, self.device, arguments, backend=self.name)
        except RuntimeError as error:
            pytest.skip(str(error))

    def check(self, fn, reference_fn, args: dict, dtype=torch.float32, summed_terms: int = 1) -> None:
        """fn (already bound to this backend) against reference_fn on ``args`` moved here, in ``dtype``
        (``summed_terms``: see s2s_fast.testing.tolerance)."""
        if dtype == torch.float32:
            compare_with_reference(fn, reference_fn, _on(args, self.device, dtype), summed_terms=summed_terms,
                                   atol_of_largest=self.weights_summed_in_its_own_order)
        else:
            compare_low_precision_with_reference(fn, reference_fn, _on(args, self.device), dtype)


def _on(args, device, dtype=None):
    from inputs import on

    return on(args, device, dtype)


def _device(name: str) -> torch.device:
    if name == "cuda":
        return torch.device(cuda_compiled.KERNEL_DEVICE_TYPE)
    if name == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


SEEDS = ["0", "1"] if cuda_compiled.EMULATED_GPU else ["0"]
PARAMS = [("triton", "0")] + [("cuda", seed) for seed in SEEDS] + [("aten", "0"), ("cpu", "0")]


@pytest.fixture
def op(request) -> str:
    """The op under test: <op> of the module test_<op>.py; a module over several ops parametrises ``op`` itself."""
    return request.module.__name__.rpartition(".")[2].removeprefix("test_")


@pytest.fixture(params=PARAMS, ids=lambda p: p[0] if len(SEEDS) == 1 or p[0] != "cuda" else f"cuda-seed{p[1]}")
def backend(request, monkeypatch, op) -> Backend:
    """A backend on the device its kernels run on here; skipped where it cannot run or lacks the test's op."""
    name, seed = request.param
    device = _device(name)
    reason = backends.unavailable_reason(name, device)
    if reason is not None:
        if device.type == "cuda":  # a GPU backend that cannot run on a GPU machine is a finding, not a skip
            pytest.fail(f"{name} cannot run on this GPU machine: {reason}")
        pytest.skip(f"{name} unavailable: {reason}")
    if op in backends.OP_NAMES and not backends.implements(name, op):
        pytest.skip(f"{name} does not implement {op}")
    monkeypatch.setenv("S2S_FAST_CUDA_EMULATE_SEED", seed)
    if name == "cpu":
        # Every product of the cpu kernels through the library this machine chose (oneDNN off Intel's CPUs), not
        # only those of 2M multiply-adds and more: the shapes here are small.
        work = torch.ops.s2s_fast.cpu_onednn_from_work()
        torch.ops.s2s_fast.cpu_onednn_from_work(0)
        request.addfinalizer(lambda: torch.ops.s2s_fast.cpu_onednn_from_work(work))
    return Backend(name, device, seed)


@pytest.fixture
def poisoned_allocations(monkeypatch):
    """Fill every tensor allocated through torch.empty/empty_like with NaN, so an element no kernel writes shows
    (the emulated cuda library fills its own fresh outputs with NaN)."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poison_(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poison_(empty_like(*args, **kwargs)))
