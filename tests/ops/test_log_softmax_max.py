"""log_softmax_max on every backend that implements it (the cpu backend's two-pass kernel) against the reference
(torch's log_softmax, non-finite log-probabilities made -inf, the banned token -inf, max): the same token, the same
log-probability within float32's or float64's rounding, on vocabularies around the kernel's chunk and vector widths,
the banned token in a vector chunk, a tail or absent, ties, rows with NaN, +inf and -inf, strided and half-precision
logits, thread counts, and the operator itself through torch.library.opcheck."""

import pytest
import torch

from s2s_fast import functional as F
from s2s_fast.functional import InputError, InputTypeError

INF = float("inf")
# The log-probabilities' tolerance: float32's kernel sums exponentials within 20 ulp (ATen's exp_u20).
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _check(backend, logits, banned=None):
    best, token = F.log_softmax_max(logits.to(backend.device), banned, backend=backend.name)
    expected_best, expected_token = F.log_softmax_max(logits, banned, backend="reference")
    assert best.dtype == expected_best.dtype and token.dtype == torch.int64
    assert torch.equal(token.cpu(), expected_token), (token, expected_token)
    torch.testing.assert_close(best.cpu(), expected_best, **TOLERANCE[expected_best.dtype])
    return best.cpu(), token.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("vocab", [1, 2, 7, 8, 63, 64, 65, 129, 1000, 8000])
def test_matches_the_reference_without_and_with_a_banned_token(backend, dtype, vocab):
    torch.manual_seed(vocab)
    logits = torch.randn(13, vocab, dtype=dtype) * 4
    _check(backend, logits)
    # The banned token: the first, the last, one inside a vector chunk, and each row's own best.
    for banned in sorted({0, vocab - 1, vocab // 2, int(logits[0].argmax())}):
        _check(backend, logits, banned)


def test_the_banned_token_stays_in_the_normalisation(backend):
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0] * 20], dtype=torch.float64)
    logits[0, 40] = 5.0
    best, token = _check(backend, logits, banned=40)
    assert int(token) == 0  # the first of the equal logits left
    torch.testing.assert_close(best, -torch.log(torch.tensor([79 + torch.e ** 5], dtype=torch.float64)))


def test_ties_give_the_first_index(backend):
    logits = torch.zeros(4, 300)
    logits[0, [7, 90, 200]] = 3.0  # across chunks
    logits[1, [130, 131]] = 3.0  # inside one chunk
    logits[2, [299, 298]] = 3.0  # in the tail
    _, token = _check(backend, logits)
    assert token.tolist() == [7, 130, 298, 0]


@pytest.mark.parametrize("vocab", [5, 200])
def test_rows_without_a_finite_log_probability_give_minus_infinity_and_token_zero(backend, vocab):
    torch.manual_seed(0)
    logits = torch.randn(7, vocab, dtype=torch.float64)
    logits[0, vocab - 2] = float("nan")
    logits[1, 3] = INF
    logits[2] = -INF
    logits[3, :] = -INF
    logits[3, 2] = 1.0  # its only finite token, banned below
    logits[4, 1] = -INF  # a -inf logit is just an impossible token
    logits[5, vocab - 1] = float("nan")  # NaN in the tail
    logits[6, 2] = float("nan")  # NaN at the banned token itself
    best, token = _check(backend, logits, banned=2)
    assert (best[[0, 1, 2, 3, 5, 6]] == -INF).all() and (token[[0, 1, 2, 3, 5, 6]] == 0).all()
    assert torch.isfinite(best[4])


def test_non_finite_logits_inside_vector_chunks(backend):
    """NaN, +inf and -inf where the kernel reads whole vectors (no banned token, far from the tail), in float32."""
    torch.manual_seed(3)
    logits = torch.randn(5, 300)
    logits[0, 40] = float("nan")
    logits[1, 100] = INF
    logits[2, 100] = -INF
    logits[3, [40, 100]] = -INF
    logits[4, 130] = float("nan")
    logits[4, 40] = INF
    best, token = _check(backend, logits)
    assert (best[[0, 1, 4]] == -INF).all() and (token[[0, 1, 4]] == 0).all()
    assert torch.isfinite(best[[2, 3]]).all()


def test_a_best_that_underflows_to_minus_infinity_gives_token_zero(backend):
    logits = torch.tensor([[-INF, -3e38, 3e38]])  # the banned shift far above the best allowed logit (index 1)
    best, token = _check(backend, logits, banned=2)
    assert best.tolist() == [-INF] and token.tolist() == [0]


def test_half_precision_logits_are_upcast_and_strided_ones_read_as_they_are(backend):
    torch.manual_seed(1)
    base = torch.randn(300, 40) * 3
    _check(backend, base.t())
    _check(backend, base[::3, ::2])
    best, _ = _check(backend, base[:5].to(torch.bfloat16), banned=3)
    assert best.dtype == torch.float32


def test_empty_batch_and_any_thread_count(backend):
    best, token = _check(backend, torch.randn(0, 9))
    assert best.shape == token.shape == (0,)
    logits = torch.randn(300, 700)  # several of the kernel's tasks
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = F.log_softmax_max(logits, 5, backend=backend.name)
        torch.set_num_threads(max(2, threads))
        many = F.log_softmax_max(logits, 5, backend=backend.name)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_opcheck(backend):
    if backend.name != "cpu":
        pytest.skip("the operator check is for the cpu backend's C++ operator")
    for logits, banned in ((torch.randn(6, 70), -1), (torch.randn(3, 9, dtype=torch.float64), 4)):
        torch.library.opcheck(torch.ops.s2s_fast.cpu_log_softmax_max.default, (logits, banned))


def test_bad_arguments_are_refused_naming_them():
    logits = torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"log_softmax_max: banned must be None or a token id in \[0, 5\), got 5"):
        F.log_softmax_max(logits, 5)
    for banned in (-1, True, 1.0):
        with pytest.raises(ValueError, match="banned must be None or a token id"):
            F.log_softmax_max(logits, banned)
    with pytest.raises(InputError, match=r"logits must be \[B, V\] \(2-d\), got a 3-d tensor"):
        F.log_softmax_max(torch.randn(2, 3, 4))
    with pytest.raises(InputError, match="at least one column"):
        F.log_softmax_max(torch.randn(3, 0))
    with pytest.raises(InputTypeError, match="log_softmax_max: logits must be float16, bfloat16, float32 or float64"):
        F.log_softmax_max(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(InputTypeError, match="logits must be a tensor, got list"):
        F.log_softmax_max([[1.0, 2.0]])
    with pytest.raises(InputError, match="not differentiable"):
        F.log_softmax_max(logits.requires_grad_())
    with torch.no_grad():
        assert F.log_softmax_max(logits)[1].shape == (3,)
