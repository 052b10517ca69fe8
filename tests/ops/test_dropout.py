"""dropout on every backend that implements it (the cpu backend, whose mask is a hash of each element's index and a
per-call seed): its masks are not torch's, so instead of matching the reference element by element it is checked
for what dropout is: every element zero or scaled by 1 / (1 - p), the kept share and its independence between
neighbours and between calls within binomial bounds, the backward applying the forward's mask, repeatable under
torch.manual_seed and on any number of threads, strided inputs, the edge cases of p and training, and the operator
itself through torch.library.opcheck."""

import math

import numpy as np
import pytest
import torch

from s2s_fast import backends
from s2s_fast import functional as F
from s2s_fast.functional import InputError, InputTypeError
from s2s_fast.testing import dropout_hash, dropout_kept

# Binomial bounds: a count off its mean by more than this many standard deviations fails (about 1e-9 by chance).
SIGMAS = 6.0


def _within(count: int, trials: int, probability: float) -> bool:
    mean = trials * probability
    return abs(count - mean) <= SIGMAS * math.sqrt(trials * probability * (1 - probability)) + 1


def _dropout(backend, input, p, training=True):
    return F.dropout(input, p, training, backend=backend.name)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_elements_are_zero_or_scaled_and_kept_with_probability_one_minus_p(backend, p, dtype):
    x = torch.rand(256, 1001, dtype=dtype, device=backend.device) + 0.5  # no zero inputs: a zero output is a drop
    y = _dropout(backend, x, p)
    assert y.shape == x.shape and y.dtype == dtype
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=2e-7 if dtype == torch.float32 else 1e-15, atol=0)
    assert _within(int(kept.sum()), x.numel(), 1 - p), float(kept.float().mean())
    # Neighbours and rows are independent: both of two adjacent elements kept with probability (1 - p)^2.
    flat = kept.flatten()
    assert _within(int((flat[1:] & flat[:-1]).sum()), flat.numel() - 1, (1 - p) ** 2)
    assert _within(int((kept[1:] & kept[:-1]).sum()), kept[1:].numel(), (1 - p) ** 2)
    # And so are two calls: an element kept by both with probability (1 - p)^2.
    again = _dropout(backend, x, p) != 0
    assert not torch.equal(again, kept)
    assert _within(int((again & kept).sum()), x.numel(), (1 - p) ** 2)


def test_the_backward_applies_the_forwards_mask_and_differentiates_again(backend):
    x = (torch.rand(64, 33, dtype=torch.float64, device=backend.device) + 0.5).requires_grad_()
    y = _dropout(backend, x, 0.4)
    grad = torch.randn_like(y, requires_grad=True)
    (dx,) = torch.autograd.grad(y, x, grad, create_graph=True)
    scale = (y / x).detach()  # 0 or 1 / (1 - p) per element
    torch.testing.assert_close(dx, grad * scale, rtol=1e-15, atol=0)
    (ddgrad,) = torch.autograd.grad(dx.sum(), grad)  # d(dx)/d(grad): the mask again
    torch.testing.assert_close(ddgrad, scale, rtol=1e-15, atol=0)


def test_the_seed_of_torch_manual_seed_repeats_a_mask_on_any_number_of_threads(backend):
    x = torch.randn(3, 70_000, device=backend.device)  # several tasks of the kernel's grain
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(7)
        one = _dropout(backend, x, 0.25)
        torch.set_num_threads(max(2, threads))
        torch.manual_seed(7)
        many = _dropout(backend, x, 0.25)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    torch.manual_seed(8)
    assert not torch.equal(_dropout(backend, x, 0.25), one)


def test_a_strided_input_is_dropped_as_its_contiguous_copy(backend):
    base = torch.randn(40, 30, dtype=torch.float64, device=backend.device)
    strided = base.t()[::2]
    assert not strided.is_contiguous()
    torch.manual_seed(3)
    from_strided = _dropout(backend, strided, 0.5)
    torch.manual_seed(3)
    from_copy = _dropout(backend, strided.contiguous(), 0.5)
    assert torch.equal(from_strided, from_copy)


def test_edge_cases_of_p_training_and_size(backend):
    x = torch.randn(5, 6, device=backend.device, requires_grad=True)
    assert _dropout(backend, x, 0.5, training=False) is x
    assert _dropout(backend, x, 0.0) is x
    zeros = _dropout(backend, x, 1.0)
    assert torch.equal(zeros, torch.zeros_like(x))
    zeros.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.empty(0, 4, device=backend.device)
    assert _dropout(backend, empty, 0.5).shape == (0, 4)
    tiny = _dropout(backend, torch.ones(100_000, device=backend.device), 1e-12)  # a threshold of 0: all kept
    assert torch.equal(tiny, torch.ones(100_000, device=backend.device))


def test_opcheck(backend):
    if backend.name != "cpu":
        pytest.skip("the operator check is for the cpu backend's C++ operator")
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.s2s_fast.cpu_dropout.default, (x, 0.3, torch.tensor(12345)))


def test_bad_arguments_are_refused_naming_them():
    x = torch.randn(3)
    with pytest.raises(ValueError, match=r"dropout: p must be a number in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match="p must be a number"):
        F.dropout(x, True)
    with pytest.raises(TypeError, match="training must be a bool, got str"):
        F.dropout(x, 0.5, "yes")
    with pytest.raises(InputTypeError, match="dropout: input must be a tensor, got list"):
        F.dropout([1.0], 0.5)
    with pytest.raises(InputTypeError, match="dropout: input must be float16, bfloat16, float32 or float64"):
        F.dropout(torch.ones(3, dtype=torch.int64), 0.5)
    # Where nothing is dropped an integer tensor passes, as through torch.nn.Dropout in eval mode.
    integers = torch.arange(4)
    assert F.dropout(integers, 0.5, training=False) is integers and F.dropout(integers, 0.0) is integers
    assert issubclass(InputError, ValueError)
    # p as torch takes it: any real number, a numpy scalar or a 0-d tensor.
    for p in (np.float32(0.25), torch.tensor(0.25), 0):
        assert F.dropout(torch.ones(10), p).shape == (10,)


def test_bfloat16_on_a_cpu_goes_to_torchs_dropout_under_auto():
    x = torch.ones(1000, dtype=torch.bfloat16)
    y = F.dropout(x, 0.5)
    assert y.dtype == torch.bfloat16 and set(y.unique().tolist()) <= {0.0, 2.0}


def test_a_compiled_call_draws_a_new_mask_each_time_and_repeats_under_manual_seed():
    reason = backends.unavailable_reason("cpu", "cpu")
    if reason is not None:
        pytest.skip(reason)
    compiled = torch.compile(lambda x: F.dropout(x, 0.5, backend="cpu"), fullgraph=True)
    x = torch.ones(4000)
    first, second = compiled(x), compiled(x)
    assert not torch.equal(first, second)
    assert _within(int((first != 0).sum()), x.numel(), 0.5)
    torch.manual_seed(1)
    again = compiled(x)
    torch.manual_seed(1)
    assert torch.equal(compiled(x), again)


# Seeds that differ only in their low or only in their high 32 bits, and the largest a call draws.
SEEDS = [0, 1, 1 << 32, (1 << 32) + 1, 12345678901234, (1 << 62) - 1]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_mask_is_the_documented_hash_of_index_and_seed(backend, seed):
    """Every kept element is the one csrc/cpu/dropout.h's hash keeps, so a mask is the same on every instruction
    set, thread count and machine (a resumed run repeats its masks wherever it resumes)."""
    if backend.name != "cpu":
        pytest.skip("the hash is the cpu backend's")
    size = 70_001
    for p in (0.5, 0.1):
        kept = torch.ops.s2s_fast.cpu_dropout(torch.ones(size), p, torch.tensor(seed)) != 0
        assert torch.equal(kept, dropout_kept(size, seed, p))
    # Indices past 2^32 (a tensor that large is not made here: the hash itself) are not a permutation of the first.
    first = dropout_hash(np.arange(4096), seed)
    assert not np.array_equal(np.sort(first), np.sort(dropout_hash(np.arange(4096) + (1 << 32), seed)))


def test_a_compiled_forward_and_backward_use_one_mask():
    reason = backends.unavailable_reason("cpu", "cpu")
    if reason is not None:
        pytest.skip(reason)

    def step(x):
        y = F.dropout(x, 0.5, backend="cpu")
        return y, torch.autograd.grad((y * y).sum(), x)[0]

    x = (torch.rand(3000) + 0.5).requires_grad_()
    y, grad = torch.compile(step)(x)
    torch.testing.assert_close(grad, 2 * y * (y / x).detach())
