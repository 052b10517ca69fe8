"""lstm_layer on every fused backend against the reference: forward and every gradient on awkward sizes, both
directions, per-row lengths (zero-length rows included), strided inputs, float16/bfloat16 where the backend runs them
here. The Triton layer's two schedules are each tested in test_triton.py; here auto picks."""

import functools

import pytest
import torch
from inputs import cell_inputs, strided

from s2s_fast import functional as F
from s2s_fast import reference

# T, B, I, H. H = 256, 600 and 1024 give the cuda persistent kernel 2, 5 and 8 units per block on 132
# multiprocessors (several blocks; full and partial tensor-core tiles); B = 17, H = 33 two Triton batch and
# hidden tiles.
SHAPES = [(1, 1, 1, 1), (5, 4, 3, 6), (7, 3, 5, 13), (4, 17, 9, 33), (6, 8, 64, 256), (4, 5, 32, 600),
          (3, 16, 16, 1024)]


def _lengths(steps, batch, with_lengths):
    if not with_lengths:
        return None
    lengths = torch.randint(0, steps + 1, (batch,))
    lengths[0] = steps
    lengths[-1] = 0 if batch > 1 else steps
    return lengths


def _run(backend, args, lengths, reverse, dtype=torch.float32):
    lengths = None if lengths is None else lengths.to(backend.device)
    backend.skip_unless_served("lstm_layer", args, dtype, lengths=lengths, reverse=reverse)
    backend.check(functools.partial(F.lstm_layer, lengths=lengths, reverse=reverse, backend=backend.name),
                  functools.partial(reference.lstm_layer, lengths=lengths, reverse=reverse), args, dtype)


@pytest.mark.parametrize("steps,batch,input_size,hidden", SHAPES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_reference(backend, poisoned_allocations, steps, batch, input_size, hidden, reverse, with_lengths):
    backend.skip_if_too_big_to_run_here(hidden)
    args = cell_inputs(4, batch, input_size, hidden, steps=steps)
    _run(backend, args, _lengths(steps, batch, with_lengths), reverse)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("steps,batch,input_size,hidden", [(5, 4, 3, 6), (4, 17, 9, 33), (6, 8, 64, 256)])
@pytest.mark.parametrize("reverse", [False, True])
def test_low_precision_error_within_twice_the_reference(backend, dtype, steps, batch, input_size, hidden, reverse):
    if dtype not in backend.low_precision:
        pytest.skip(f"{backend.name} does not run {dtype} on {backend.device.type} here")
    args = cell_inputs(4, batch, input_size, hidden, steps=steps, dtype=torch.float64)
    _run(backend, args, _lengths(steps, batch, True), reverse, dtype)


def test_strided_inputs_without_bias(backend):
    args = {name: strided(value) for name, value in cell_inputs(4, 6, 10, 32, steps=9, bias=False).items()}
    assert not args["input"].is_contiguous()
    _run(backend, args, torch.tensor([9, 2, 0, 5, 1, 9]), reverse=True)
