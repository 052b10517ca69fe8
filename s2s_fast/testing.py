"""Helpers shared by the tests and the benchmarks: tolerances per dtype, forward+backward comparisons, and the cpu
backend's dropout mask computed independently of its kernel (numpy).

Tolerances live here and nowhere else. A backend is compared with the reference on every output and on the
gradient of every differentiable input, driven by random upstream gradients on every output.
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
import torch

from .backends import float32_matmul_switch

# (rtol, atol) for comparing a backend with the reference computed in the same dtype.
TOLERANCES = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (2e-4, 2e-5),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (5e-2, 1e-2),
}
# The type a float32 product may run in, by torch's float32 matmul switch in force for the device (torch >= 2.9:
# torch.backends.mkldnn.matmul / cuda.matmul .fp32_precision; before, torch.get_float32_matmul_precision()'s word):
# float32 results computed then are checked with that type's tolerances (TF32 keeps float16's 10 mantissa bits).
_PRODUCT_DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float16, "medium": torch.bfloat16, "high": torch.float16}
# A low-precision kernel's error against a float64 reference may be at most this multiple of the error of the
# reference run in the same low precision.
LOW_PRECISION_ERROR_RATIO = 2.0


# Sums of more terms than this loosen atol by the square root of how many more (rounding of an n-term sum grows
# like sqrt(n), and two implementations sum in different orders).
SUMMED_TERMS_AT_BASE_ATOL = 256


def tolerance(dtype: torch.dtype, summed_terms: int = 1) -> dict:
    """rtol and atol for comparing a backend with the reference in ``dtype``; ``summed_terms``: the most terms an
    output or gradient sums (for attention's d v, B * Tq * Tk)."""
    rtol, atol = TOLERANCES[dtype]
    return {"rtol": rtol, "atol": atol * max(1.0, (summed_terms / SUMMED_TERMS_AT_BASE_ATOL) ** 0.5)}


def checked_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype whose tolerances check results computed in ``dtype`` on ``device`` at the float32 matmul precision
    in force: the products' type for float32 (bfloat16 at torch.set_float32_matmul_precision("medium") on a CPU,
    TF32's on a GPU), ``dtype`` itself otherwise."""
    if dtype != torch.float32:
        return dtype
    switch = float32_matmul_switch(device)
    return _PRODUCT_DTYPES.get(switch if switch is not None else torch.get_float32_matmul_precision(), dtype)


def poison_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill a fresh tensor with NaN (floating) or an out-of-range value, so an element left unwritten shows."""
    if tensor.is_floating_point():
        return tensor.fill_(float("nan"))
    return tensor.fill_(torch.iinfo(tensor.dtype).max if tensor.dtype != torch.bool else True)


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def forward_backward(fn: Callable, inputs: Mapping[str, object], upstream: Sequence[torch.Tensor] | None = None,
                     seed: int = 0):
    """Run ``fn(**inputs)`` on fresh leaf copies of the floating inputs and backpropagate.

    Upstream gradients are random (seeded) unless given. Returns (outputs, gradients by input name, upstream);
    an input that gets no gradient maps to None.
    """
    leaves = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            leaves[name] = value.detach().clone().requires_grad_(True)
        else:
            leaves[name] = value
    outputs = _as_tuple(fn(**leaves))
    if upstream is None:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.device, o.dtype)
                    for o in outputs]
    differentiable = [(o, g) for o, g in zip(outputs, upstream) if o.requires_grad]
    if differentiable:
        torch.autograd.backward([o for o, _ in differentiable], [g for _, g in differentiable])
    grads = {name: (leaf.grad if isinstance(leaf, torch.Tensor) and leaf.requires_grad else None)
             for name, leaf in leaves.items() if isinstance(leaf, torch.Tensor) and leaf.is_floating_point()}
    return tuple(o.detach() for o in outputs), grads, upstream


def compare_with_reference(fn: Callable, reference_fn: Callable, inputs: Mapping[str, object], seed: int = 0,
                           rtol: float | None = None, atol: float | None = None, summed_terms: int = 1,
                           atol_of_largest: Collection[str] = ()) -> None:
    """Assert ``fn`` matches ``reference_fn`` on every output and on every input gradient.

    Both run on the same inputs with the same random upstream gradients; tolerances default to the dtype's (with
    ``summed_terms`` as in ``tolerance``). ``atol_of_largest``: inputs whose gradients take atol times the gradient's
    largest magnitude, for a backend whose sums run in an order whose error grows with that, not with each element's.
    """
    ref_out, ref_grads, upstream = forward_backward(reference_fn, inputs, seed=seed)
    out, grads, _ = forward_backward(fn, inputs, upstream=upstream)
    dtype = next(o.dtype for o in ref_out if o.is_floating_point())
    default = tolerance(dtype, summed_terms)
    tol = {"rtol": default["rtol"] if rtol is None else rtol, "atol": default["atol"] if atol is None else atol}
    assert len(out) == len(ref_out), f"{len(out)} outputs, reference has {len(ref_out)}"
    def scaled(name: str, expected: torch.Tensor) -> dict:
        if name not in atol_of_largest or expected.numel() == 0:
            return tol
        return {**tol, "atol": tol["atol"] * max(1.0, float(expected.abs().max()))}

    for index, (actual, expected) in enumerate(zip(out, ref_out)):
        torch.testing.assert_close(actual, expected, **tol, msg=lambda m, i=index: f"output {i}: {m}")
    for name, expected in ref_grads.items():
        actual = grads[name]
        if expected is None:
            assert actual is None or torch.count_nonzero(actual) == 0, f"gradient of {name} should be None"
            continue
        # An input that gets no gradient (None) matches an all-zero one: an empty sequence reaches no weight.
        assert actual is not None or torch.count_nonzero(expected) == 0, f"no gradient reached {name}"
        if actual is None:
            continue
        torch.testing.assert_close(actual, expected, **scaled(name, expected),
                                   msg=lambda m, n=name: f"gradient of {n}: {m}")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(|expected|, tiny), in float64."""
    expected = expected.double()
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual.double() - expected).abs().max() / scale)


def compare_low_precision_with_reference(fn: Callable, reference_fn: Callable, inputs: Mapping[str, object],
                                         dtype: torch.dtype, seed: int = 0,
                                         ratio: float = LOW_PRECISION_ERROR_RATIO) -> None:
    """Assert ``fn`` run in ``dtype`` is at most ``ratio`` times as far from the float64 reference as
    ``reference_fn`` run in ``dtype`` is (plus one unit of ``dtype`` rounding), on every output and input gradient.

    All three runs see the same ``dtype``-rounded inputs and upstream gradients; errors are ``relative_error``.
    """
    def cast(values, to):
        return {name: value.to(to) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
                for name, value in values.items()}

    low_inputs = cast(inputs, dtype)
    exact_inputs = cast(low_inputs, torch.float64)
    _, _, upstream = forward_backward(reference_fn, exact_inputs, seed=seed)
    low_upstream = [g.to(dtype) for g in upstream]
    exact_upstream = [g.double() for g in low_upstream]
    exact_out, exact_grads, _ = forward_backward(reference_fn, exact_inputs, upstream=exact_upstream)
    reference_out, reference_grads, _ = forward_backward(reference_fn, low_inputs, upstream=low_upstream)
    out, grads, _ = forward_backward(fn, low_inputs, upstream=low_upstream)
    floor = torch.finfo(dtype).eps
    checks = [(f"output {i}", out[i], reference_out[i], exact_out[i]) for i in range(len(exact_out))]
    checks += [(f"gradient of {name}", grads[name], reference_grads[name], exact)
               for name, exact in exact_grads.items() if exact is not None]
    for what, actual, reference, exact in checks:
        assert actual is not None, f"{what}: missing"
        error, reference_error = relative_error(actual, exact), relative_error(reference, exact)
        assert error <= ratio * reference_error + floor, (
            f"{what}: error {error:.3g} against float64, over {ratio} x the {dtype} reference's {reference_error:.3g} "
            f"+ {floor:.3g}")


def dropout_hash(indices: np.ndarray, seed: int) -> np.ndarray:
    """csrc/cpu/dropout.h's mask hash of each index under seed, in numpy's wrapping unsigned arithmetic."""
    with np.errstate(over="ignore"):
        mask64 = np.uint64(0xFFFFFFFFFFFFFFFF)
        z = (np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15)) & mask64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & mask64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & mask64
        mixed = z ^ (z >> np.uint64(31))

        def mix32(x):
            x = x ^ (x >> np.uint32(16))
            x = x * np.uint32(0x7FEB352D)
            x = x ^ (x >> np.uint32(15))
            x = x * np.uint32(0x846CA68B)
            return x ^ (x >> np.uint32(16))

        indices = indices.astype(np.uint64)
        low = (indices & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        high = (indices >> np.uint64(32)).astype(np.uint32)
        inner = np.uint32(int(mixed) & 0xFFFFFFFF)
        outer = np.uint32(int(mixed) >> 32) ^ mix32(high + np.uint32(0x9E3779B9))
        return mix32(mix32(low ^ inner) + outer)


def dropout_kept(size: int, seed: int, p: float) -> torch.Tensor:
    """Which of ``size`` elements the cpu backend's dropout keeps under ``seed`` at ``p``."""
    return torch.from_numpy(dropout_hash(np.arange(size), seed) >= np.uint32(math.floor(p * 2 ** 32)))
