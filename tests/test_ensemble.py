"""Ensembles: greedy and beam search over several models' averaged log-probabilities, checked against the members'
teacher-forced scores; ensembles of one model and of copies decode as the model; what cannot form an ensemble is
refused; decode and evaluate take several runs."""

import copy
import functools
import json
import math
import re
import shutil

import pytest
import torch

from test_decoding import VOCAB, _batch, assert_wide_beam_is_exhaustive
from test_decoding import _model as decoding_model
from test_toolkit_cli import TINY_TOY, _run

from s2s_fast.data import BOS_ID, EOS_ID
from s2s_fast.models import Ensemble


def _model(attention="bahdanau", seed=0, eos_bias=0.0, **overrides):
    """test_decoding's tiny float64 model, one decoder layer, no EOS bias unless asked."""
    return decoding_model(attention, eos_bias=eos_bias, seed=seed, **{"decoder_layers": 1, **overrides})


def _mean_log_probs(models, src, length, prefix):
    """Teacher-forced: after BOS + prefix, the members' mean log-probabilities renormalised: [len(prefix) + 1, V]."""
    tgt_in = torch.tensor([[BOS_ID] + prefix])
    with torch.no_grad():
        members = [torch.log_softmax(m(src.unsqueeze(0), torch.tensor([length]), tgt_in)[0], -1) for m in models]
    return torch.log_softmax(torch.stack(members).mean(0), -1)


def _ensemble_score(models, src, length, tokens, ended):
    target = tokens + ([EOS_ID] if ended else [])
    log_probs = _mean_log_probs(models, src, length, target[:-1])
    return float(sum(log_probs[t, token] for t, token in enumerate(target)))


@pytest.mark.parametrize("beam_size,n_best", [(1, 1), (3, 2)])
def test_an_ensemble_of_one_model_or_of_copies_decodes_as_the_model(beam_size, n_best):
    model = _model()
    batch = _batch()
    options = dict(beam_size=beam_size, n_best=n_best, max_len=6, return_attention=True)
    alone, attention = model.generate(batch.src, batch.src_lengths, **options)
    for ensemble in (Ensemble([model]), Ensemble([model, copy.deepcopy(model), copy.deepcopy(model)])):
        together, ensemble_attention = ensemble.generate(batch.src, batch.src_lengths, **options)
        if n_best == 1:
            assert together == alone
        else:
            assert [[t for t, _ in row] for row in together] == [[t for t, _ in row] for row in alone]
            for row, other in zip(together, alone):
                for (_, a), (_, b) in zip(row, other):
                    assert math.isclose(a, b, rel_tol=1e-9)
        for a, b in zip(ensemble_attention, attention):
            torch.testing.assert_close(a, b)


def test_greedy_takes_the_best_token_of_the_members_mean_at_every_step():
    models = [_model(seed=1), _model("luong-dot", seed=2), _model(seed=3, cell="gru")]
    ensemble = Ensemble(models)
    batch = _batch(count=6, seed=4)
    found = ensemble.generate(batch.src, batch.src_lengths, max_len=6)
    changed = False
    for row, tokens in enumerate(found):
        src, length = batch.src[row], int(batch.src_lengths[row])
        log_probs = _mean_log_probs(models, src, length, tokens)
        expected = log_probs.argmax(-1).tolist()
        assert tokens == expected[:len(tokens)]
        if len(tokens) < 6:
            assert expected[len(tokens)] == EOS_ID
        single = models[0].generate(src[:length].unsqueeze(0), batch.src_lengths[row:row + 1], max_len=6)[0]
        changed |= single != tokens
    assert changed, "the ensemble decoded as its first member: the test would not see the others"


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_finds_the_best_sequence_under_the_ensemble(alpha):
    models = [_model(seed=5, eos_bias=0.5), _model(seed=6, attention="none", eos_bias=0.5)]
    assert_wide_beam_is_exhaustive(Ensemble(models), functools.partial(_ensemble_score, models),
                                   _batch(count=3, seed=7), alpha)


def test_an_ensemble_with_a_member_without_attention_returns_no_attention():
    ensemble = Ensemble([_model(), _model(attention="none", seed=1)])
    batch = _batch()
    assert ensemble.attention is None
    with pytest.raises(ValueError, match="return_attention needs a model with attention"):
        ensemble.generate(batch.src, batch.src_lengths, return_attention=True)
    assert len(ensemble.generate(batch.src, batch.src_lengths, beam_size=2)) == len(batch.src)


def test_what_cannot_form_an_ensemble_is_refused():
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(TypeError, match="model 1 must be an s2s_fast.models.Seq2Seq"):
        Ensemble([_model(), torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="model 1 has tgt_vocab_size 9 but model 0 has"):
        Ensemble([_model(), _model(tgt_vocab_size=9)])
    with pytest.raises(ValueError, match="model 1 has eos_id"):
        Ensemble([_model(), _model(eos_id=3)])
    with pytest.raises(ValueError, match="different devices"):
        Ensemble([_model(), _model().to("meta")])
    with pytest.raises(TypeError, match="Ensemble decodes"):
        Ensemble([_model()])(torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="src holds ids outside the vocabulary"):
        Ensemble([_model()]).generate(torch.full((1, 2), VOCAB), torch.tensor([2]))


TINY = [*TINY_TOY, "--max-steps", "4", "--eval-every", "0"]


def test_decode_and_evaluate_take_several_runs_as_one_ensemble(tmp_path, capsys):
    runs = {}
    for name, extra in (("a", []), ("b", ["--seed", "1", "--model", "cell=gru"]), ("other-data", ["--toy-seed", "5"]),
                        ("copy", ["--task", "copy"])):
        runs[name] = tmp_path / name
        task = [] if "--task" in extra else ["--task", "reverse"]
        code, _, err = _run(capsys, "train", "--output-dir", runs[name], *task, *TINY, *extra)
        assert code == 0, err
    inputs = tmp_path / "in.txt"
    inputs.write_text("1 2 3\n3 1\n")
    code, out, _ = _run(capsys, "decode", runs["a"], runs["b"], "--input", inputs, "--n-best", 2, "--device", "cpu")
    assert code == 0 and len(out.splitlines()) == 4
    output = tmp_path / "out.txt"
    code, _, _ = _run(capsys, "decode", runs["a"], runs["b"], "--input", inputs, "--output", output, "--device", "cpu")
    assert code == 0 and len(output.read_text().splitlines()) == 2
    assert len(json.loads((tmp_path / "out.txt.config.json").read_text())["checkpoint"]) == 2

    code, out, _ = _run(capsys, "evaluate", runs["a"], runs["b"], "--split", "test", "--device", "cpu")
    assert code == 0 and re.search(r"reverse test: accuracy \d+\.\d\d%.*ensemble of 2: a/step-00000004, "
                                   r"b/step-00000004", out), out
    report, = (runs["a"] / "evaluations").glob("test-ensemble-a.step-00000004+b.step-00000004-*-beam5.json")
    written = json.loads(report.read_text())
    assert len(written["checkpoint"]) == 2 and written["joint"] == "ensemble"
    # Another run named b (elsewhere) gets files of its own: they overwrote the first ensemble's.
    shutil.copytree(runs["b"], tmp_path / "elsewhere" / "b")
    assert _run(capsys, "evaluate", runs["a"], tmp_path / "elsewhere" / "b", "--device", "cpu")[0] == 0
    reports = sorted((runs["a"] / "evaluations").glob("test-ensemble-a.step-00000004+b.step-00000004-*-beam5.json"))
    other, = set(reports) - {report}
    assert str(tmp_path / "elsewhere" / "b") in json.loads(other.read_text())["checkpoint"][1]

    # Other data: decoding together is fine (same vocabularies), scoring on a split is not (a member may have
    # trained on it).
    assert _run(capsys, "decode", runs["a"], runs["other-data"], "--input", inputs, "--device", "cpu")[0] == 0
    code, _, err = _run(capsys, "evaluate", runs["a"], runs["other-data"], "--device", "cpu")
    assert code == 1 and "cannot join an ensemble" in err and "data settings differ (toy_seed)" in err, err
    code, _, err = _run(capsys, "decode", runs["a"], runs["copy"], "--input", inputs, "--device", "cpu")
    assert code == 1 and "task copy against reverse" in err and len(err.strip().splitlines()) == 1, err
