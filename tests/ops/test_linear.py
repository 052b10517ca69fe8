"""linear on every backend that implements it (the cpu backend) against the reference (torch's own linear): forward
and every gradient, with and without a bias, inputs of one to three dims, empty sizes, strided operands."""

import functools

import pytest
import torch
from inputs import strided

from s2s_fast import functional as F
from s2s_fast import reference

# (input shape, N): one row, primes, a vector width, 3-d and 1-d inputs, and empty rows, inputs and outputs.
SHAPES = [((1, 1), 1), ((5, 7), 3), ((16, 33), 24), ((3, 4, 70), 33), ((9,), 5), ((0, 6), 4), ((4, 0), 5),
          ((4, 6), 0)]


def _args(shape, outputs, bias):
    inputs = shape[-1]
    args = {"input": torch.randn(*shape, dtype=torch.float64),
            "weight": torch.randn(outputs, inputs, dtype=torch.float64) / max(inputs, 1) ** 0.5}
    if bias:
        args["bias"] = torch.randn(outputs, dtype=torch.float64)
    return args


def _check(backend, args, dtype=torch.float32):
    backend.check(functools.partial(F.linear, backend=backend.name), reference.linear, args, dtype)


@pytest.mark.parametrize("shape,outputs", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(backend, poisoned_allocations, shape, outputs, bias):
    _check(backend, _args(shape, outputs, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_strided_operands(backend, dtype):
    args = {name: strided(value) for name, value in _args((12, 24), 16, True).items()}
    args["weight"] = torch.randn(24, 16, dtype=torch.float64).t()  # a transposed view
    assert not args["input"].is_contiguous() and not args["weight"].is_contiguous()
    _check(backend, args, dtype)
