"""beam_candidates on every backend that implements it (the cpu backend's heap scan) against the reference
(torch's log_softmax, the beams' scores added in float64, topk): the same totals within float32's or float64's
rounding and the same extensions, on vocabularies around the kernel's chunk and vector widths, dead beams (-inf
scores), a banned token, rows without a finite log-probability, ties (by index on the cpu backend; in no guaranteed
order on the reference), every candidate kept, and the operator itself through torch.library.opcheck."""

import pytest
import torch

from s2s_fast import functional as F
from s2s_fast.functional import InputError, InputTypeError
from s2s_fast.reference.log_softmax_max import finite_log_softmax

INF = float("inf")
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _totals(logits, scores, banned):
    log_probs = finite_log_softmax(logits).double()
    if banned is not None:
        log_probs[:, banned] = -INF
    return (scores.reshape(-1, 1) + log_probs).view(scores.shape[0], scores.shape[1] * log_probs.shape[1])


def _check(backend, logits, scores, count, banned=None):
    top, index = F.beam_candidates(logits.to(backend.device), scores.to(backend.device), count, banned,
                                   backend=backend.name)
    expected_top, expected_index = F.beam_candidates(logits, scores, count, banned, backend="reference")
    top, index = top.cpu(), index.cpu()
    assert top.dtype == torch.float64 and index.dtype == torch.int64 and top.shape == (scores.shape[0], count)
    tolerance = TOLERANCE[torch.promote_types(logits.dtype, torch.float32)]
    torch.testing.assert_close(top, expected_top, equal_nan=True, **tolerance)
    # Each chosen extension has the total reported; where the reference's totals are distinct, the same extension.
    totals = _totals(logits, scores, banned)
    torch.testing.assert_close(totals.gather(1, index), top, equal_nan=True, **tolerance)
    assert (index.sort(dim=1).values.diff(dim=1) > 0).all(), "an extension chosen twice"
    for row in range(scores.shape[0]):
        values = expected_top[row]
        for rank in range(count):
            value = values[rank]
            if torch.isfinite(value) and (values == value).sum() == 1 and (totals[row] == value).sum() == 1:
                assert index[row, rank] == expected_index[row, rank], (row, rank)
    return top, index


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("vocab", [1, 3, 8, 64, 65, 200, 8000])
def test_matches_the_reference(backend, dtype, vocab):
    torch.manual_seed(vocab)
    inputs, beams = 6, 4
    logits = torch.randn(inputs * beams, vocab, dtype=dtype) * 3
    scores = torch.randn(inputs, beams, dtype=torch.float64) * 3 - 5
    scores[0, 1:] = -INF  # the first step: one live beam
    scores[1, 2] = -INF
    count = min(2 * beams, beams * vocab)
    _check(backend, logits, scores, count)
    for banned in sorted({0, vocab - 1, vocab // 2}):
        _check(backend, logits, scores, count, banned)


def test_every_candidate_kept_and_ties_by_index(backend):
    logits = torch.zeros(6, 5, dtype=torch.float64)
    scores = torch.tensor([[0.0, -1.0, -INF], [0.0, 0.0, 0.0]], dtype=torch.float64)
    top, index = _check(backend, logits, scores, 15)
    if backend.name == "cpu":
        # Equal totals come by index: beam 0's five tokens, then beam 1's, then the dead beam's.
        assert index[0].tolist() == list(range(15))
        assert index[1].tolist() == list(range(15))
    assert (top[0, 10:] == -INF).all()


def test_rows_without_a_finite_log_probability_rank_minus_infinity(backend):
    torch.manual_seed(0)
    logits = torch.randn(8, 70, dtype=torch.float64)
    logits[0, 5] = float("nan")
    logits[1, 69] = INF
    logits[2] = -INF
    logits[3, :] = -INF
    logits[3, 7] = 2.0  # only its banned token is finite
    scores = torch.zeros(2, 4, dtype=torch.float64)
    top, index = _check(backend, logits, scores, 8, banned=7)
    # Input 0's four rows have no finite log-probability (NaN, +inf, all -inf, only the banned token finite).
    assert (top[0] == -INF).all()
    assert torch.isfinite(top[1]).all() and (index[1] != 4 * 70 + 7).all()


def test_non_finite_logits_inside_vector_chunks_and_non_finite_scores(backend):
    torch.manual_seed(4)
    logits = torch.randn(9, 300)
    logits[0, 40] = float("nan")
    logits[1, 100] = INF
    logits[2, [40, 100]] = -INF
    logits[3, 130] = float("nan")
    scores = torch.tensor([[0.0, -1.0, -2.0], [INF, 0.0, -INF], [float("nan"), 0.0, -1.0]], dtype=torch.float64)
    _check(backend, logits, scores, 6)
    _check(backend, logits, scores, 6, banned=40)


def test_no_candidate_is_skipped_near_the_bar(backend):
    """Large float32 logits (1e4, where the chunk test's margin is widest in logit units) a few ulps apart, spread over
    many chunks in random order: every extension of the true best 40 is found."""
    torch.manual_seed(5)
    ulp = float(torch.nextafter(torch.tensor(1e4), torch.tensor(INF)) - 1e4)
    logits = 1e4 + torch.stack([torch.randperm(2000) for _ in range(4)]).float() * (8 * ulp)
    scores = torch.tensor([[0.0, -0.05], [-5.0, -5.01]], dtype=torch.float64)  # no equal totals
    _, index = F.beam_candidates(logits, scores, 40, backend=backend.name)
    expected = _totals(logits, scores, None).topk(40, dim=1).indices
    assert torch.equal(index, expected)


def test_any_thread_count(backend):
    torch.manual_seed(6)
    logits, scores = torch.randn(60, 900), torch.randn(20, 3, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = F.beam_candidates(logits, scores, 6, 5, backend=backend.name)
        torch.set_num_threads(max(2, threads))
        many = F.beam_candidates(logits, scores, 6, 5, backend=backend.name)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_strided_half_precision_and_empty(backend):
    torch.manual_seed(2)
    base = torch.randn(90, 12) * 2
    scores = torch.randn(2, 3, dtype=torch.float64)
    _check(backend, base.t()[:6], scores, 6)
    _check(backend, base[:6].to(torch.bfloat16), scores, 4, banned=2)
    top, index = _check(backend, torch.randn(0, 9), torch.zeros(0, 3, dtype=torch.float64), 2)
    assert top.shape == index.shape == (0, 2)


def test_opcheck(backend):
    if backend.name != "cpu":
        pytest.skip("the operator check is for the cpu backend's C++ operator")
    scores = torch.randn(3, 2, dtype=torch.float64)
    for logits, banned in ((torch.randn(6, 70), -1), (torch.randn(6, 9, dtype=torch.float64), 4)):
        torch.library.opcheck(torch.ops.s2s_fast.cpu_beam_candidates.default, (logits, scores, 4, banned))


def test_bad_arguments_are_refused_naming_them():
    logits, scores = torch.randn(6, 5), torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"beam_candidates: count must be an integer in \[1, K \* V\] = \[1, 10\], "
                                         r"got 11"):
        F.beam_candidates(logits, scores, 11)
    for count in (0, True, 2.0):
        with pytest.raises(ValueError, match="count must be an integer"):
            F.beam_candidates(logits, scores, count)
    with pytest.raises(InputTypeError, match=r"scores must be a float64 \[B, K\] tensor, got torch.float32"):
        F.beam_candidates(logits, scores.float(), 2)
    with pytest.raises(InputTypeError, match="scores must be a float64"):
        F.beam_candidates(logits, scores.flatten(), 2)
    with pytest.raises(InputError, match=r"logits must have shape \[B \* K, V\] = \[6, V\]"):
        F.beam_candidates(logits[:4], scores, 2)
    with pytest.raises(ValueError, match=r"banned must be None or a token id in \[0, 5\), got -2"):
        F.beam_candidates(logits, scores, 2, -2)
    with pytest.raises(InputError, match="not differentiable"):
        F.beam_candidates(logits, scores.clone().requires_grad_(), 2)
    with pytest.raises(InputError, match="not differentiable"):
        F.beam_candidates(logits.requires_grad_(), scores, 2)
