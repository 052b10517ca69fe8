"""Right-to-left models (Seq2SeqConfig.reverse_target) and BothDirections: a right-to-left model decodes into reading
order; teacher-forced scores (score_targets) are the beam's; a left-to-right and a right-to-left model decode as one
by ranking the union of their proposals by the mean of both scores; what cannot pair is refused; train, decode and
evaluate take such runs."""

import copy
import json
import math

import pytest
import torch

from test_decoding import _batch, _penalty, _sequence_log_prob
from test_ensemble import _model
from test_toolkit_cli import TINY_TOY, _run

from s2s_fast.data import EOS_ID
from s2s_fast.decoding import score_targets
from s2s_fast.models import BothDirections, Ensemble, Seq2Seq, Seq2SeqConfig, decoder_of
from s2s_fast.train import Trainer


def _reversed_twin(model: Seq2Seq) -> Seq2Seq:
    """The same weights, writing right to left."""
    twin = Seq2Seq(Seq2SeqConfig(**{**model.config.to_dict(), "reverse_target": True})).double().eval()
    twin.load_state_dict(model.state_dict())
    return twin


def _log_prob(model, src, length, tokens):
    """log p(tokens + EOS) under teacher forcing through the model's forward, tokens given in reading order."""
    return _sequence_log_prob(model, src, length, tokens[::-1] if model.config.reverse_target else tokens, True)


@pytest.mark.parametrize("beam_size,n_best", [(1, 1), (3, 2)])
def test_a_right_to_left_model_returns_its_outputs_in_reading_order(beam_size, n_best):
    forward = _model(seed=1)
    backward = _reversed_twin(forward)
    batch = _batch(count=5, seed=2)
    options = dict(beam_size=beam_size, n_best=n_best, max_len=6, return_attention=True)
    written, attention = forward.generate(batch.src, batch.src_lengths, **options)
    read, read_attention = backward.generate(batch.src, batch.src_lengths, **options)
    if n_best == 1:
        assert read == [tokens[::-1] for tokens in written]
    else:
        assert [[t for t, _ in row] for row in read] == [[t[::-1] for t, _ in row] for row in written]
        assert [[s for _, s in row] for row in read] == [[s for _, s in row] for row in written]
    assert any(len(tokens) > 1 for tokens in (read if n_best == 1 else [row[0][0] for row in read]))
    for a, b in zip(read_attention, attention):
        torch.testing.assert_close(a, b.flip(0))


@pytest.mark.parametrize("make", ["forward", "backward", "ensemble"])
def test_teacher_forced_scores_and_attention_are_the_beams(make):
    first, second = _model(seed=3, eos_bias=1.0), _model(seed=4, eos_bias=1.0)
    model = {"forward": first, "backward": _reversed_twin(first), "ensemble": Ensemble([first, second])}[make]
    batch = _batch(count=4, seed=5)
    found = model.generate(batch.src, batch.src_lengths, beam_size=3, n_best=3, max_len=8)
    rows = [row for row, hypotheses in enumerate(found) for tokens, _ in hypotheses if len(tokens) < 8]
    targets = [tokens for hypotheses in found for tokens, _ in hypotheses if len(tokens) < 8]
    expected = [score for hypotheses in found for tokens, score in hypotheses if len(tokens) < 8]
    assert len(targets) >= 8
    index = torch.tensor(rows)
    scores, _ = score_targets(model, batch.src[index], batch.src_lengths[index], targets)
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64))
    if make != "ensemble":
        for row, tokens, score in zip(rows, targets, scores.tolist()):
            src, length = batch.src[row], int(batch.src_lengths[row])
            assert math.isclose(score, _log_prob(model, src, length, tokens), rel_tol=1e-9)
    best, attention = model.generate(batch.src, batch.src_lengths, beam_size=3, max_len=8, return_attention=True)
    _, forced = score_targets(model, batch.src, batch.src_lengths, best, return_attention=True)
    assert forced.shape == (4, max(map(len, best)) + 1, batch.src.shape[1])
    for row, (tokens, weights) in enumerate(zip(best, attention)):
        rows_read = forced[row, :len(tokens), :int(batch.src_lengths[row])]
        torch.testing.assert_close(rows_read.flip(0) if make == "backward" else rows_read, weights.double())


def test_score_targets_scores_in_eval_mode_and_refuses_what_it_cannot_score():
    model = _model(seed=12, eos_bias=1.0, dropout=0.5).train()
    batch = _batch(count=3, seed=13)
    targets = [[3, 4], [], [5]]
    scores = [score_targets(model, batch.src, batch.src_lengths, targets)[0] for _ in range(2)]
    assert model.training and all(module.training for module in model.modules())
    torch.testing.assert_close(scores[0], scores[1])
    torch.testing.assert_close(scores[0], score_targets(model.eval(), batch.src, batch.src_lengths, targets)[0])
    for bad, message in (([[3], [4]], "2 targets for 3 sources"), ([[3], [EOS_ID], [4]], "target 1 holds 2"),
                         ([[3], [4], [99]], "target 2 holds 99"), ([[3], [-1], [4]], "target 1 holds -1"),
                         ([[3], ["a"], [4]], "target 1 must be a sequence of integer token ids")):
        with pytest.raises(ValueError, match=message):
            score_targets(model, batch.src, batch.src_lengths, bad)
    with pytest.raises(TypeError, match="BothDirections pair holds two models"):
        score_targets(BothDirections(model, _reversed_twin(model)), batch.src, batch.src_lengths, targets)
    assert score_targets(model, batch.src[:0], batch.src_lengths[:0], [])[0].shape == (0,)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_both_directions_rank_the_union_of_proposals_by_their_mean_score(alpha):
    forward = _model(seed=1, eos_bias=-0.3)  # hypotheses of 0-6 tokens, some ending at the length limit
    backward = _reversed_twin(_model(seed=2, eos_bias=-0.3))
    pair = BothDirections(forward, backward)
    batch = _batch(count=6, seed=3)
    options = dict(beam_size=3, n_best=3, max_len=6, length_penalty=alpha)
    found = pair.generate(batch.src, batch.src_lengths, **options)
    proposed = [forward.generate(batch.src, batch.src_lengths, **options),
                backward.generate(batch.src, batch.src_lengths, **options)]
    differs = False
    for row, hypotheses in enumerate(found):
        src, length = batch.src[row], int(batch.src_lengths[row])
        union = {tuple(tokens) for model_found in proposed for tokens, _ in model_found[row]}

        def mean_score(tokens):
            total = sum(_log_prob(model, src, length, tokens) for model in (forward, backward)) / 2
            return total / _penalty(len(tokens) + 1, alpha)

        best = sorted(union, key=lambda tokens: -mean_score(list(tokens)))
        assert [tuple(tokens) for tokens, _ in hypotheses] == best[:3]
        for tokens, score in hypotheses:
            assert math.isclose(score, mean_score(tokens), rel_tol=1e-9)
        differs |= hypotheses[0][0] != proposed[0][row][0][0]
    assert differs, "the pair decoded as its first model: the test would not see the second"
    greedy = pair.generate(batch.src, batch.src_lengths, max_len=6)
    assert len(greedy) == 6 and all(isinstance(tokens, list) for tokens in greedy)


def test_a_pair_with_a_model_whose_weights_are_not_finite_ends_with_minus_infinity():
    broken = _reversed_twin(_model(seed=14))
    with torch.no_grad():
        broken.output.weight.fill_(float("nan"))
    batch = _batch(count=3, seed=15)
    found = BothDirections(_model(seed=16), broken).generate(batch.src, batch.src_lengths, beam_size=2, n_best=2,
                                                             max_len=5)
    assert all(len(row) >= 1 and all(score == float("-inf") for _, score in row) for row in found)


def test_the_pairs_attention_is_its_first_models_in_reading_order():
    backward = _reversed_twin(_model(seed=9))
    pair = BothDirections(backward, _model(seed=10))
    batch = _batch(count=4, seed=11)
    found, attention = pair.generate(batch.src, batch.src_lengths, beam_size=2, max_len=6, return_attention=True)
    for row, (tokens, weights) in enumerate(zip(found, attention)):
        length = int(batch.src_lengths[row])
        assert weights.shape == (len(tokens), length)
        _, forced = score_targets(backward, batch.src[row:row + 1], batch.src_lengths[row:row + 1], [tokens],
                                  return_attention=True)
        torch.testing.assert_close(weights, forced[0, :len(tokens), :length].flip(0).float())
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(tokens)))


def test_what_cannot_decode_in_both_directions_is_refused():
    forward, other = _model(seed=1), _model(seed=2)
    backward = _reversed_twin(_model(seed=3))
    with pytest.raises(ValueError, match="different directions"):
        Ensemble([forward, backward])
    with pytest.raises(ValueError, match="same direction"):
        BothDirections(forward, other)
    with pytest.raises(TypeError, match="model 1 must be a Seq2Seq or an Ensemble"):
        BothDirections(forward, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="model 1 has tgt_vocab_size 9"):
        BothDirections(forward, _reversed_twin(_model(tgt_vocab_size=9)))
    with pytest.raises(TypeError, match="BothDirections decodes"):
        BothDirections(forward, backward)(torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one model"):
        decoder_of([])
    assert decoder_of([backward]) is backward
    assert isinstance(decoder_of([forward, other]), Ensemble)
    pair = decoder_of([backward, forward, copy.deepcopy(backward), other])
    assert isinstance(pair, BothDirections) and pair.config.reverse_target
    assert isinstance(pair.first, Ensemble) and list(pair.first.members) == [backward, pair.first.members[1]]
    assert list(pair.second.members) == [forward, other]


def test_a_right_to_left_run_trains_on_reversed_targets_and_evaluates_with_a_left_to_right_one(tmp_path, capsys,
                                                                                                monkeypatch):
    batches = []
    take_step = Trainer._train_step
    monkeypatch.setattr(Trainer, "_train_step", lambda self, batch: batches.append(batch) or take_step(self, batch))
    runs = {}
    for name, extra in (("ltr", []), ("rtl", ["--model", "reverse_target=true", "--seed", "1"])):
        runs[name] = tmp_path / name
        batches.clear()
        code, _, err = _run(capsys, "train", "--output-dir", runs[name], *TINY_TOY, "--max-steps", "4",
                            "--eval-every", "0", *extra)
        assert code == 0, err
        # The reverse task's targets are its sources reversed: a right-to-left decoder is fed them as copies.
        for batch in batches:
            for src, length, tgt_out in zip(batch.src.tolist(), batch.src_lengths.tolist(), batch.tgt_out.tolist()):
                written = tgt_out[:tgt_out.index(EOS_ID)]
                assert written == (src[:length] if name == "rtl" else src[:length][::-1])
        assert len(batches) == 4
    code, out, err = _run(capsys, "evaluate", runs["ltr"], runs["rtl"], "--split", "test", "--device", "cpu")
    assert code == 0 and "both directions, 2 models (each direction proposes, both score): ltr/step-00000004, " \
                         "rtl/step-00000004" in out, err
    report, = (runs["ltr"] / "evaluations").glob("test-ensemble-ltr.step-00000004+rtl.step-00000004-*-beam5.json")
    report = json.loads(report.read_text())
    assert len(report["checkpoint"]) == 2 and report["joint"] == "both directions"
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2 3\n3 1 4 4\n")
    code, out, err = _run(capsys, "decode", runs["rtl"], runs["ltr"], "--input", inputs, "--n-best", 2,
                          "--device", "cpu")
    assert code == 0 and len(out.splitlines()) == 4, err
