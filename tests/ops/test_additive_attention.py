"""additive_attention on every fused backend against the reference: forward and every gradient on awkward sizes
(one query per row and many, primes, several key and query tiles, wide A and Dv), with no mask, a random mask and
a row that attends to nothing (zeros, never NaN), strided inputs, float16/bfloat16 where the backend runs them
here, upstream gradients from a sum of one output, and NaN in masked keys changing nothing where the backend never
reads them."""

import functools

import pytest
import torch
from inputs import attention_inputs, on, strided

from s2s_fast import functional as F
from s2s_fast import reference

SHAPES = [  # B, Tq (None: [B, A] queries), Tk, A, Dv
    (3, None, 6, 5, 4),  # one query per row: a decoder step
    (1, 1, 1, 1, 1),
    (2, 3, 5, 4, 3),
    (3, 7, 11, 13, 17),  # primes: scalar (unvectorised) loads
    (2, 19, 23, 33, 4),  # several query tiles (key gradients summed over them) and chunks of A
    (2, 4, 37, 24, 16),  # a full and a partial tile of 32 keys in the cuda backward
    (4, 5, 70, 64, 32),  # several key tiles
    (2, 3, 9, 600, 512),  # wide A and Dv: lanes loop over A, the context takes two chunks
    (1, 2, 7, 8, 300),  # Dv = 300 in chunks of 32 lanes
    (80, 20, 9, 16, 8),  # enough query tiles for 16 queries per cuda block
    (3, 6, 44, 32, 16),  # Tk % 4 == 0: the cuda kernels take four scores per access
]


def _attention(backend):
    return functools.partial(F.additive_attention, backend=backend.name)


@pytest.mark.parametrize("batch,queries,keys,attn,value_size", SHAPES)
@pytest.mark.parametrize("mask", ["none", "random", "empty_row"])
def test_matches_reference(backend, poisoned_allocations, batch, queries, keys, attn, value_size, mask):
    args = attention_inputs(batch, queries, keys, attn, value_size, mask=mask)
    # d v sums a term per (row, query, key).
    backend.check(_attention(backend), reference.additive_attention, args,
                  summed_terms=batch * (queries or 1) * keys)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("batch,queries,keys,attn,value_size", [(3, None, 6, 5, 4), (3, 7, 11, 13, 17),
                                                               (4, 5, 70, 64, 32)])
def test_low_precision_error_within_twice_the_reference(backend, dtype, batch, queries, keys, attn, value_size):
    if dtype not in backend.low_precision:
        pytest.skip(f"{backend.name} does not run {dtype} on {backend.device.type} here")
    args = attention_inputs(batch, queries, keys, attn, value_size, mask="empty_row", dtype=torch.float64)
    backend.check(_attention(backend), reference.additive_attention, args, dtype)


def test_strided_inputs(backend):
    args = {name: strided(value) if name != "mask" else value
            for name, value in attention_inputs(4, 6, 10, 24, 16).items()}
    assert not args["query_proj"].is_contiguous() and not args["values"].is_contiguous()
    backend.check(_attention(backend), reference.additive_attention, args)


def test_rows_with_no_valid_key_give_zeros_not_nan(backend):
    args = on(attention_inputs(3, 4, 6, 8, 5, mask="empty_row"), backend.device)
    leaves = {k: v.requires_grad_() if v is not None and v.is_floating_point() else v for k, v in args.items()}
    context, weights = _attention(backend)(**leaves)
    (context.sum() + weights.sum()).backward()
    empty = 1
    assert torch.count_nonzero(context[empty]) == 0 and torch.count_nonzero(weights[empty]) == 0
    for name in ("query_proj", "key_proj", "v", "values"):
        assert torch.isfinite(leaves[name].grad).all(), name
    assert torch.count_nonzero(leaves["query_proj"].grad[empty]) == 0
    assert torch.count_nonzero(leaves["values"].grad[empty]) == 0


# The backends that multiply masked keys' values by their zero weight (functional.additive_attention's docstring).
READS_MASKED_KEYS = ("triton",)


def test_masked_keys_are_never_read(backend):
    """NaN in the masked keys' key_proj and values changes nothing, forward or backward, where the backend never
    reads them."""
    if backend.name in READS_MASKED_KEYS:
        pytest.skip(f"{backend.name} multiplies masked keys' values by zero: they must be finite there")
    for queries in (None, 4):
        args = on(attention_inputs(3, queries, 7, 8, 5, mask="empty_row"), backend.device)
        masked = ~args["mask"][..., None]
        poisoned = dict(args, key_proj=args["key_proj"].masked_fill(masked, float("nan")),
                        values=args["values"].masked_fill(masked, float("nan")))
        results = []
        for inputs in (args, poisoned):
            leaves = {k: v.clone().requires_grad_() if v is not None and v.is_floating_point() else v
                      for k, v in inputs.items()}
            context, weights = _attention(backend)(**leaves)
            (context.sum() + (weights * torch.arange(weights.shape[-1], device=weights.device)).sum()).backward()
            grads = [leaves[name].grad for name in ("query_proj", "key_proj", "v", "values")]
            results.append([context, weights, *grads])
        for clean, dirty in zip(*results):
            torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
