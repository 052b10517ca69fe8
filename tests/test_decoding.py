"""Greedy and beam search: equivalences, exactness on a tiny search space, limits, n-best scores, errors."""

import functools
import itertools
import math

import pytest
import torch

from s2s_fast.data import BOS_ID, EOS_ID, PAD_ID, collate, make_pairs, toy_vocab_size
from s2s_fast.decoding import beam_search, greedy_search
from s2s_fast.models import Ensemble, Seq2Seq, Seq2SeqConfig
from s2s_fast.reference.log_softmax_max import finite_log_softmax

SYMBOLS = 3
VOCAB = toy_vocab_size(SYMBOLS)


def _model(attention="bahdanau", eos_bias=2.0, seed=0, **overrides):
    torch.manual_seed(seed)
    options = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=6, hidden_size=8, encoder_layers=1,
                   decoder_layers=2, dropout=0.0, attention=attention)
    options.update(overrides)
    model = Seq2Seq(Seq2SeqConfig(**options)).double().eval()
    with torch.no_grad():
        # Random weights rarely emit EOS; a bias makes hypotheses end at varied lengths.
        model.output.bias[EOS_ID] += eos_bias
        model.output.weight.mul_(4.0)
    return model


def _batch(count=6, seed=0):
    return collate(make_pairs("copy", count, num_symbols=SYMBOLS, max_len=5, seed=seed), PAD_ID, BOS_ID, EOS_ID)


def _sequence_log_prob(model, src, src_length, tokens, ended: bool) -> float:
    """log p(tokens [+ EOS]) under teacher forcing."""
    target = tokens + ([EOS_ID] if ended else [])
    tgt_in = torch.tensor([[BOS_ID] + target[:-1]]) if target else torch.tensor([[BOS_ID]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src.unsqueeze(0), torch.tensor([src_length]), tgt_in), -1)[0]
    return float(sum(log_probs[t, token] for t, token in enumerate(target)))


def _penalty(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def test_beam_of_one_equals_greedy():
    for attention, seed in itertools.product(["bahdanau", "luong-dot", "none"], range(3)):
        model = _model(attention, seed=seed)
        batch = _batch(seed=seed)
        encoded = model.encode(batch.src, batch.src_lengths)
        limits = [7] * len(batch.src)
        greedy = greedy_search(model, encoded, batch.src_lengths, limits, 1, False)
        beam = beam_search(model, encoded, batch.src_lengths, limits, 1, 1, 0.0, 1, False)
        assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
        for g, (b,) in zip(greedy, beam):
            assert math.isclose(g.score, b.score, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("beam_size,n_best,alpha", [(1, 1, 0.0), (3, 1, 0.0), (4, 3, 0.6), (2, 2, 1.0)])
def test_batch_equals_one_by_one(beam_size, n_best, alpha):
    model = _model()
    batch = _batch(count=5, seed=3)
    options = dict(beam_size=beam_size, n_best=n_best, length_penalty=alpha, max_len=6, min_len=1)
    together = model.generate(batch.src, batch.src_lengths, **options)
    for row in range(len(batch.src)):
        length = int(batch.src_lengths[row])
        alone = model.generate(batch.src[row:row + 1, :length], batch.src_lengths[row:row + 1], **options)
        if n_best == 1:
            assert alone[0] == together[row]
        else:
            assert [t for t, _ in alone[0]] == [t for t, _ in together[row]]
            for (_, a), (_, b) in zip(alone[0], together[row]):
                assert math.isclose(a, b, rel_tol=1e-9)


def assert_wide_beam_is_exhaustive(model, sequence_log_prob, batch, alpha, max_len=3):
    """``model`` (a Seq2Seq or an ensemble) with a beam wider than every prefix set returns, per input, the best 3 of
    all sequences up to max_len, scored by ``sequence_log_prob(src, length, tokens, ended)``."""
    found = model.generate(batch.src, batch.src_lengths, beam_size=VOCAB ** max_len, n_best=3, max_len=max_len,
                           length_penalty=alpha)
    for row in range(len(batch.src)):
        src, length = batch.src[row], int(batch.src_lengths[row])
        scored = []
        for size in range(max_len + 1):
            for tokens in itertools.product([t for t in range(VOCAB) if t != EOS_ID], repeat=size):
                ended = size < max_len
                log_prob = sequence_log_prob(src, length, list(tokens), ended)
                scored.append((log_prob / _penalty(size + int(ended), alpha), list(tokens)))
        scored.sort(key=lambda item: -item[0])
        assert [t for t, _ in found[row]] == [t for _, t in scored[:3]]
        for (_, score), (expected, _) in zip(found[row], scored):
            assert math.isclose(score, expected, rel_tol=1e-9)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_is_exhaustive_search(alpha):
    """With a beam wider than every prefix set, beam search returns the best of all sequences up to max_len."""
    model = _model(eos_bias=1.0)
    assert_wide_beam_is_exhaustive(model, functools.partial(_sequence_log_prob, model), _batch(count=3, seed=5),
                                   alpha)


def test_n_best_scores_are_rescored_log_probs_and_sorted():
    model = _model()
    batch = _batch(count=4, seed=7)
    alpha = 0.6
    results = model.generate(batch.src, batch.src_lengths, beam_size=4, n_best=4, length_penalty=alpha, max_len=6)
    for row, hypotheses in enumerate(results):
        scores = [s for _, s in hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(t) for t, _ in hypotheses}) == len(hypotheses)
        for tokens, score in hypotheses:
            ended = len(tokens) < 6
            log_prob = _sequence_log_prob(model, batch.src[row], int(batch.src_lengths[row]), tokens, ended)
            assert math.isclose(score, log_prob / _penalty(len(tokens) + int(ended), alpha), rel_tol=1e-7)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_length_limits(beam_size):
    model = _model(eos_bias=-5.0)
    batch = _batch()
    for tokens in model.generate(batch.src, batch.src_lengths, beam_size=beam_size, max_len=4):
        assert len(tokens) == 4
    for tokens, length in zip(model.generate(batch.src, batch.src_lengths, beam_size=beam_size, max_len_ratio=1.5),
                              batch.src_lengths.tolist()):
        assert len(tokens) == math.ceil(1.5 * length)
    eager = _model(eos_bias=50.0)
    for tokens in eager.generate(batch.src, batch.src_lengths, beam_size=beam_size, min_len=2, max_len=5):
        assert len(tokens) == 2
    for tokens in eager.generate(batch.src, batch.src_lengths, beam_size=beam_size):
        assert tokens == []
    # A limit below min_len (here the ratio's, 1 or 2 tokens) cut the output short of min_len, silently.
    for tokens in eager.generate(batch.src, batch.src_lengths, beam_size=beam_size, min_len=7, max_len_ratio=0.1,
                                 max_len=9):
        assert len(tokens) == 7


@pytest.mark.parametrize("beam_size", [1, 3])
def test_return_attention(beam_size):
    model = _model()
    batch = _batch()
    hypotheses, attention = model.generate(batch.src, batch.src_lengths, beam_size=beam_size, max_len=6,
                                           return_attention=True)
    for tokens, weights, length in zip(hypotheses, attention, batch.src_lengths.tolist()):
        assert weights.shape == (len(tokens), length)
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(tokens)))


def test_generate_errors():
    model = _model()
    batch = _batch()
    for options, pattern in ((dict(beam_size=0), "beam_size"), (dict(beam_size=2, n_best=3), "n_best"),
                             (dict(max_len=0), "max_len"), (dict(max_len_ratio=-1.0), "max_len_ratio"),
                             (dict(max_len_ratio=float("inf"), max_len=5), "max_len_ratio must be a positive finite"),
                             (dict(max_len_ratio=True), "max_len_ratio"),
                             (dict(min_len=-1), "min_len"),
                             (dict(min_len=5, max_len=2), r"min_len \(5\) exceeds max_len \(2\)"),
                             (dict(length_penalty=float("nan")), "length_penalty"),
                             (dict(length_penalty=float("inf")), "length_penalty"),
                             (dict(beam_size=2, length_penalty=1000.0), r"length_penalty must be a number in "
                                                                        r"\[-10, 10\]"),
                             (dict(length_penalty=0.6), r"greedy search \(beam_size 1\) has one")):
        with pytest.raises(ValueError, match=pattern):
            model.generate(batch.src, batch.src_lengths, **options)
    with pytest.raises(ValueError, match="attention"):
        _model("none").generate(batch.src, batch.src_lengths, return_attention=True)


def test_generate_restores_training_mode():
    model = _model().train()
    batch = _batch()
    model.generate(batch.src, batch.src_lengths)
    assert model.training
    # Each submodule's own mode, not the model's flag spread over them: an Ensemble of members in eval mode (as
    # checkpoints load) is itself in training mode, a new Module's default, and left its members so (dropout on).
    members = [_model().eval(), _model().eval()]
    members[1].decoder.train()
    ensemble = Ensemble(members)
    before = [m.training for m in ensemble.modules()]
    assert before[0] and not members[0].training
    ensemble.generate(batch.src, batch.src_lengths, beam_size=2)
    assert [m.training for m in ensemble.modules()] == before


@pytest.mark.parametrize("beam_size,n_best", [(1, 1), (3, 1), (3, 2)])
def test_non_finite_scores_end_an_input_without_touching_the_others(beam_size, n_best):
    """An input whose scores turn NaN (a source symbol with a NaN embedding) ends with no tokens and score -inf,
    never an IndexError; the other inputs of the batch decode as they would alone."""
    model = _model()
    pairs = [([3, 4, 3], [3, 4, 3]), ([5, 3], [5, 3]), ([4, 4, 4, 3], [4, 4, 4, 3])]
    batch = collate(pairs, PAD_ID, BOS_ID, EOS_ID)
    clean = model.generate(batch.src, batch.src_lengths, beam_size=beam_size, n_best=n_best)
    with torch.no_grad():
        model.src_embed.weight[5] = float("nan")
    hypotheses, attention = model.generate(batch.src, batch.src_lengths, beam_size=beam_size, n_best=n_best,
                                           return_attention=True)
    assert hypotheses[0] == clean[0] and hypotheses[2] == clean[2]
    assert hypotheses[1] == ([] if n_best == 1 else [([], -math.inf)])
    assert attention[1].shape == (0, 2)


def test_a_model_with_nan_weights_decodes_to_empty_hypotheses():
    model = _model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    batch = _batch(count=3)
    assert model.generate(batch.src, batch.src_lengths) == [[], [], []]
    assert model.generate(batch.src, batch.src_lengths, beam_size=3) == [[], [], []]
    assert model.generate(batch.src, batch.src_lengths, beam_size=3, n_best=3) == [[([], -math.inf)]] * 3



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_token_or_row_without_a_finite_score_stays_minus_infinity(dtype):
    """Log-probabilities as both searches take them: a row holding NaN or +inf is -inf throughout, and a token whose
    logit is -inf keeps log-probability -inf (not the lowest finite float, which a search would take)."""
    torch.manual_seed(0)
    logits = (torch.randn(5, 11, dtype=torch.float64) * 4).to(dtype)
    logits[1, 3] = float("nan")
    logits[2, 5] = float("inf")
    logits[3] = float("-inf")
    logits[4] = float("-inf")
    logits[4, EOS_ID] = 0.0
    log_probs = finite_log_softmax(logits)
    assert log_probs.dtype == torch.promote_types(dtype, torch.float32)
    assert torch.isfinite(log_probs[0]).all() and not torch.isnan(log_probs).any()
    assert (log_probs[1:4] == float("-inf")).all()
    assert log_probs[4, EOS_ID] == 0.0 and (log_probs[4, torch.arange(11) != EOS_ID] == float("-inf")).all()
    # A row whose only possible token is held off (min_len) ends: its best is -inf, not a finite number.
    log_probs[:, EOS_ID] = float("-inf")
    assert log_probs[4].max() == float("-inf")


@pytest.mark.parametrize("beam_size", [1, 3])
def test_the_cpu_backends_token_choices_decode_as_the_references(beam_size, monkeypatch):
    """Greedy (log_softmax_max) and beam search (beam_candidates) with those two ops on the cpu backend pick what
    torch's log_softmax, max and topk pick on the reference backend: the same float32 model, a vocabulary of 300
    (many vectors and chunks of the kernels), min_len holding EOS off for the first steps."""
    from s2s_fast import backends
    from s2s_fast import functional

    reason = backends.unavailable_reason("cpu", "cpu")
    if reason is not None:
        pytest.skip(reason)
    model = _model(eos_bias=1.0, seed=2, tgt_vocab_size=300, backend="reference").float()
    batch = _batch(count=8, seed=7)
    options = dict(beam_size=beam_size, n_best=beam_size, max_len=7, min_len=2,
                   length_penalty=0.6 if beam_size > 1 else 0.0)
    reference = model.generate(batch.src, batch.src_lengths, **options)
    for name in ("log_softmax_max", "beam_candidates"):
        op = getattr(functional, name)
        monkeypatch.setattr(functional, name, functools.partial(lambda op, *args, **kwargs: op(
            *args, **{**kwargs, "backend": "cpu"}), op))
    cpu = model.generate(batch.src, batch.src_lengths, **options)
    for ours, theirs in zip(cpu, reference):
        ours, theirs = (ours, theirs) if beam_size > 1 else ([ours], [theirs])
        assert [tokens for tokens, _ in ours] == [tokens for tokens, _ in theirs]
        for (_, a), (_, b) in zip(ours, theirs):
            assert math.isclose(a, b, rel_tol=1e-5)


def test_translate_checks_its_options_and_ids_whatever_the_inputs():
    """With no sources translate accepted any option (generate, which checks them, ran per batch); ids that are not
    integers were cast (3.9 read as 3, True as BOS); a bool batch_tokens was taken as 1."""
    from s2s_fast.inference import translate

    model, plain = _model(), _model(attention="none")
    for call, message in ((lambda: translate(model, [], beam_size=0), "beam_size must be an integer >= 1"),
                          (lambda: translate(model, [], n_best=3), "n_best \\(3\\) cannot exceed beam_size"),
                          (lambda: translate(model, [], beam_size=2, length_penalty=float("nan")), "length_penalty"),
                          (lambda: translate(model, [], max_len_ratio=0), "max_len_ratio must be a positive"),
                          (lambda: translate(plain, [], return_attention=True), "return_attention needs a model"),
                          (lambda: translate(model, [[3, 4]], batch_tokens=True), "batch_tokens must be a positive"),
                          (lambda: translate(model, [[3.9, 4.7]]), "token ids must be integers, got torch.float32"),
                          (lambda: translate(model, [[True, False]]), "token ids must be integers, got torch.bool")):
        with pytest.raises(ValueError, match=message):
            call()
    assert translate(model, []) == ([], None)


def test_decoding_on_the_meta_device_is_refused_in_words():
    """The forward runs on the meta device; decoding reads values (which token won, whether every row ended) and
    failed deep inside the search (Tensor.item, nonzero), or in the attention's check for a meta source."""
    model = _model()
    src, lengths = torch.randint(3, VOCAB, (2, 3)), torch.tensor([3, 2])
    for beam in (1, 2):
        with pytest.raises(ValueError, match="decoding needs values, and the model or the source is on the meta"):
            model.generate(src.to("meta"), lengths, beam_size=beam)
    meta = _model().to("meta")
    for beam in (1, 2):
        with pytest.raises(ValueError, match="decoding needs values"):
            meta.generate(src, lengths, beam_size=beam)
    assert meta(src.to("meta"), lengths, src.to("meta")).shape == (2, 3, VOCAB)  # the forward still runs
