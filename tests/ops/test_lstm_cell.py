"""lstm_cell on every fused backend against the reference: forward and every gradient on awkward sizes, with and
without biases, strided inputs, float16/bfloat16 where the backend runs them here, fresh outputs poisoned."""

import functools

import pytest
import torch
from inputs import cell_inputs, strided

from s2s_fast import functional as F
from s2s_fast import reference

# B, I, H: ones; primes (scalar accesses); vector-width multiples; either side of the cuda cell's fused-gates batch
# (8); two batch tiles of the Triton kernels.
SHAPES = [(1, 1, 1), (3, 5, 7), (8, 16, 24), (9, 33, 40), (33, 70, 33)]
LOW_PRECISION_SHAPES = [(3, 5, 7), (9, 33, 40), (64, 128, 256)]


@pytest.mark.parametrize("batch,input_size,hidden", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(backend, poisoned_allocations, batch, input_size, hidden, bias):
    args = cell_inputs(4, batch, input_size, hidden, bias=bias)
    backend.check(functools.partial(F.lstm_cell, backend=backend.name), reference.lstm_cell, args)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch,input_size,hidden", LOW_PRECISION_SHAPES)
def test_low_precision_error_within_twice_the_reference(backend, dtype, batch, input_size, hidden):
    if dtype not in backend.low_precision:
        pytest.skip(f"{backend.name} does not run {dtype} on {backend.device.type} here")
    args = cell_inputs(4, batch, input_size, hidden, dtype=torch.float64)
    backend.check(functools.partial(F.lstm_cell, backend=backend.name), reference.lstm_cell, args, dtype)


@pytest.mark.parametrize("batch", [2, 12])
def test_strided_inputs(backend, batch):
    args = {name: strided(value) for name, value in cell_inputs(4, batch, 24, 16).items()}
    assert not args["input"].is_contiguous() and not args["weight_hh"].is_contiguous()
    backend.check(functools.partial(F.lstm_cell, backend=backend.name), reference.lstm_cell, args)
