"""lstm_cell and gru_cell on every fused backend against the reference: forward and every gradient on awkward sizes,
with and without biases, strided inputs, float16/bfloat16 where the backend runs them here, fresh outputs
poisoned."""

import functools

import pytest
import torch
from inputs import rnn_inputs, strided

from s2s_fast import functional as F
from s2s_fast import reference

OPS = ["lstm_cell", "gru_cell"]
# B, I, H: ones; primes (scalar accesses); vector-width multiples; either side of the cuda LSTM cell's fused-gates
# batch (8); two batch tiles of the Triton kernels.
SHAPES = [(1, 1, 1), (3, 5, 7), (8, 16, 24), (9, 33, 40), (33, 70, 33)]
LOW_PRECISION_SHAPES = [(3, 5, 7), (9, 33, 40), (64, 128, 256)]


def _check(backend, op, args, dtype=torch.float32):
    backend.check(functools.partial(getattr(F, op), backend=backend.name), getattr(reference, op), args, dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("batch,input_size,hidden", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_matches_reference(backend, poisoned_allocations, op, batch, input_size, hidden, bias):
    _check(backend, op, rnn_inputs(op, batch, input_size, hidden, bias=bias))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch,input_size,hidden", LOW_PRECISION_SHAPES)
def test_low_precision_error_within_twice_the_reference(backend, op, dtype, batch, input_size, hidden):
    if dtype not in backend.low_precision:
        pytest.skip(f"{backend.name} does not run {dtype} on {backend.device.type} here")
    _check(backend, op, rnn_inputs(op, batch, input_size, hidden, dtype=torch.float64), dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("batch", [2, 12])
def test_strided_inputs(backend, op, batch):
    args = {name: strided(value) for name, value in rnn_inputs(op, batch, 24, 16).items()}
    assert not args["input"].is_contiguous() and not args["weight_hh"].is_contiguous()
    _check(backend, op, args)
