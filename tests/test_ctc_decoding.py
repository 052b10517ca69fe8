"""Decoding with the CTC head (generate's ctc_weight): the beam's proposals, or a BothDirections pair's, ranked by
(1 - w) x the decoders' mean log-probability + w x the CTC heads' mean; what CTC cannot emit; what is refused;
evaluate's files."""

import json
import math

import pytest
import torch

from test_both_directions import _log_prob, _reversed_twin
from test_decoding import _batch, _penalty
from test_ensemble import _ensemble_score, _model
from test_toolkit_cli import TINY_TOY, _lines, _one_line, _run, _tiny_run

from s2s_fast.data import PAD_ID
from s2s_fast.decoding import _ctc_log_likelihoods
from s2s_fast.models import BothDirections, Ensemble


def _ctc_log_likelihood(model, src, length, tokens):
    """CTC's log-likelihood of ``tokens`` (reading order) under the model's head over its own source, row alone;
    -inf for tokens holding the blank (the pad id), which CTC never emits."""
    if PAD_ID in tokens:
        return float("-inf")
    with torch.no_grad():
        scores = model.ctc_scores(model.encode(src[:length].unsqueeze(0), torch.tensor([length])))
        frames = int(scores.lengths[0])
        loss = torch.nn.functional.ctc_loss(scores.log_probs[:, :frames].transpose(0, 1),
                                            torch.tensor([list(tokens) or [PAD_ID]]), torch.tensor([frames]),
                                            torch.tensor([len(tokens)]), blank=PAD_ID, reduction="sum")
    return -float(loss)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_ctc_rescores_the_beams_proposals_by_the_weighted_sum(alpha):
    model = _model(seed=2, ctc_weight=0.3)
    batch = _batch(count=12, seed=3)
    options = dict(beam_size=3, n_best=3, max_len=6, length_penalty=alpha)
    proposed = model.generate(batch.src, batch.src_lengths, **options)
    found = model.generate(batch.src, batch.src_lengths, ctc_weight=0.3, **options)
    differs, rescored = False, 0
    for row, hypotheses in enumerate(found):
        src, length = batch.src[row], int(batch.src_lengths[row])

        def joint(tokens):
            total = 0.7 * _log_prob(model, src, length, tokens) + 0.3 * _ctc_log_likelihood(model, src, length, tokens)
            return total / _penalty(len(tokens) + 1, alpha)

        emitted = [tuple(tokens) for tokens, _ in proposed[row]
                   if math.isfinite(_ctc_log_likelihood(model, src, length, tokens))]
        if not emitted:  # CTC can emit none of them (a short source): the decoder's ranking stands (each scored
            # with EOS after it, as rescored_search scores one the search stopped at the length limit)
            def decoder(tokens):
                return _log_prob(model, src, length, tokens) / _penalty(len(tokens) + 1, alpha)

            assert [t for t, _ in hypotheses] == sorted((t for t, _ in proposed[row]), key=lambda t: -decoder(t))
            assert all(math.isclose(score, decoder(tokens), rel_tol=1e-9) for tokens, score in hypotheses)
            continue
        rescored += 1
        assert [tuple(tokens) for tokens, _ in hypotheses] == sorted(emitted, key=lambda t: -joint(list(t)))
        for tokens, score in hypotheses:
            assert math.isclose(score, joint(tokens), rel_tol=1e-9)
        differs |= hypotheses[0][0] != proposed[row][0][0]
    assert rescored >= 6, "too few inputs CTC can rescore"
    assert differs, "CTC changed no ranking: the test would not see it"


def test_a_pair_and_ensembles_rescore_with_every_models_ctc_head():
    """BothDirections of an Ensemble and a model: each direction's CTC log-likelihood is its members' mean, the
    pair's the mean of the two directions', as the decoders' scores are."""
    forward = Ensemble([_model(seed=1, eos_bias=-0.3, ctc_weight=0.3), _model(seed=5, ctc_weight=0.3)])
    backward = _reversed_twin(_model(seed=2, eos_bias=-0.3, ctc_weight=0.3))
    pair = BothDirections(forward, backward)
    batch = _batch(count=6, seed=4)
    options = dict(beam_size=2, n_best=2, max_len=6)
    plain = pair.generate(batch.src, batch.src_lengths, **options)
    found = pair.generate(batch.src, batch.src_lengths, ctc_weight=0.4, **options)
    proposed = [forward.generate(batch.src, batch.src_lengths, **options),
                backward.generate(batch.src, batch.src_lengths, **options)]
    for row, hypotheses in enumerate(found):
        src, length = batch.src[row], int(batch.src_lengths[row])

        def joint(tokens):
            decoders = (_ensemble_score(list(forward.members), src, length, tokens, True)
                        + _log_prob(backward, src, length, tokens)) / 2
            ctc = (sum(_ctc_log_likelihood(m, src, length, tokens) for m in forward.members) / 2
                   + _ctc_log_likelihood(backward, src, length, tokens)) / 2
            return 0.6 * decoders + 0.4 * ctc

        union = {tuple(tokens) for model_found in proposed for tokens, _ in model_found[row]}
        best = sorted((t for t in union if math.isfinite(joint(list(t)))), key=lambda t: -joint(list(t)))
        assert [tuple(tokens) for tokens, _ in hypotheses] == best[:2]
        for tokens, score in hypotheses:
            assert math.isclose(score, joint(tokens), rel_tol=1e-9)
    assert found != plain, "CTC changed no ranking: the test would not see it"


def test_an_input_whose_proposals_ctc_cannot_emit_keeps_the_decoders_ranking():
    """One letter has two frames; min_len 3 makes every proposal longer than CTC can emit there."""
    model = _model(seed=2, ctc_weight=0.3)
    src, lengths = torch.tensor([[3, 0, 0, 0, 0], [4, 5, 3, 4, 5]]), torch.tensor([1, 5])
    options = dict(beam_size=3, n_best=3, max_len=6, min_len=3)
    plain = model.generate(src, lengths, **options)
    found = model.generate(src, lengths, ctc_weight=0.5, **options)
    # Each scored by the decoder with EOS after it (rescored_search's score of one stopped at the length limit).
    decoder = {tuple(t): _log_prob(model, src[0], 1, t) for t, _ in plain[0]}
    assert [tuple(t) for t, _ in found[0]] == sorted(decoder, key=lambda t: -decoder[t])
    assert all(math.isclose(score, decoder[tuple(t)], rel_tol=1e-9) for t, score in found[0])
    assert not any(math.isfinite(_ctc_log_likelihood(model, src[0], 1, t)) for t in decoder)
    assert any(math.isfinite(_ctc_log_likelihood(model, src[1], 5, t)) for t, _ in found[1])  # rescored there


@pytest.mark.parametrize("options,pattern", [
    (dict(ctc_weight=0.3), r"greedy search of one model proposes one"),
    (dict(beam_size=2, ctc_weight=1.0), r"ctc_weight must be a number in \[0, 1\)"),
    (dict(beam_size=2, ctc_weight=float("nan")), r"ctc_weight must be a number in \[0, 1\)"),
    (dict(beam_size=2, ctc_weight=True), r"ctc_weight must be a number"),
])
def test_bad_ctc_weights_are_refused(options, pattern):
    model = _model(seed=1, ctc_weight=0.3)
    batch = _batch(count=2)
    with pytest.raises(ValueError, match=pattern):
        model.generate(batch.src, batch.src_lengths, **options)


def test_a_model_without_a_ctc_head_is_refused_and_a_greedy_pair_may_rescore():
    batch = _batch(count=3, seed=7)
    headless = _model(seed=1)
    with pytest.raises(ValueError, match=r"has none \(trained with ctc_weight 0\)"):
        headless.generate(batch.src, batch.src_lengths, beam_size=2, ctc_weight=0.3)
    pair = BothDirections(_model(seed=1, ctc_weight=0.3), _reversed_twin(_model(seed=2)))
    with pytest.raises(ValueError, match="has none"):
        pair.generate(batch.src, batch.src_lengths, ctc_weight=0.3)
    pair = BothDirections(_model(seed=1, ctc_weight=0.3), _reversed_twin(_model(seed=2, ctc_weight=0.3)))
    assert len(pair.generate(batch.src, batch.src_lengths, ctc_weight=0.3)) == 3  # greedy: two proposals an input


def test_evaluate_and_decode_take_a_ctc_weight_and_name_it(tmp_path, capsys):
    """--ctc-weight reaches the search: evaluate's files carry -ctcW and its report the weight; decode's settings
    file too; a run without a CTC head is refused in one line, before anything is written."""
    run = tmp_path / "ctc"
    assert _run(capsys, "train", "--output-dir", run, "--max-steps", 3, "--eval-every", 0, *TINY_TOY,
                "--model", "ctc_weight=0.3")[0] == 0
    for extra in ([], ["--ctc-weight", 0.5]):
        assert _run(capsys, "evaluate", run, "--split", "dev", "--beam-size", 2, "--device", "cpu", *extra)[0] == 0
    names = sorted(p.name.split("-", 3)[3] for p in (run / "evaluations").glob("dev-step-*.json"))
    assert names == ["beam2-ctc0.5.json", "beam2.json"], names
    report = json.loads(next((run / "evaluations").glob("dev-*-ctc0.5.json")).read_text())
    assert report["ctc_weight"] == 0.5
    inputs, output = _lines(tmp_path / "in", ["1 2 3", "4 5"]), tmp_path / "out"
    assert _run(capsys, "decode", run, "--input", inputs, "--output", output, "--beam-size", 2, "--ctc-weight",
                0.5)[0] == 0
    assert json.loads((tmp_path / "out.config.json").read_text())["ctc_weight"] == 0.5
    headless = _tiny_run(tmp_path, capsys)
    _one_line(*_run(capsys, "evaluate", headless, "--split", "dev", "--beam-size", 2, "--device", "cpu",
                    "--ctc-weight", 0.5)[::2], r"has none \(trained with ctc_weight 0\)")
    assert not (headless / "evaluations").exists() or not list((headless / "evaluations").iterdir())


def test_ctc_log_likelihoods_score_each_target_and_never_one_holding_the_blank():
    """A target holding the pad id (CTC's blank, which a decoder may still emit) scores -inf; an empty one, all
    blanks; the others as CTC row by row."""
    model = _model(seed=2, ctc_weight=0.3)
    src, lengths = torch.tensor([[4, 5, 3], [3, 4, 5], [5, 3, 0]]), torch.tensor([3, 3, 2])
    targets = [[3, 4], [3, PAD_ID, 4], []]
    with torch.no_grad():
        found = _ctc_log_likelihoods(model, model.encode(src, lengths), targets)
    assert found[1] == float("-inf")
    for row in (0, 2):
        expected = _ctc_log_likelihood(model, src[row], int(lengths[row]), targets[row])
        assert math.isfinite(expected) and math.isclose(float(found[row]), expected, rel_tol=1e-9)
    # Only empty targets (width 0, which torch's CTC refuses as a target tensor): each as CTC's all-blank path.
    with torch.no_grad():
        empty = _ctc_log_likelihoods(model, model.encode(src, lengths), [[], [], []])
    for row in range(3):
        expected = _ctc_log_likelihood(model, src[row], int(lengths[row]), [])
        assert math.isclose(float(empty[row]), expected, rel_tol=1e-9)
