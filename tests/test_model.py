"""Seq2Seq model: configurations, masking, teacher forcing vs step decoding, errors, and learning a toy task."""

import itertools
import re

import pytest
import torch

from s2s_fast.backends import BackendError, use_backend
from s2s_fast.data import BOS_ID, EOS_ID, PAD_ID, collate, make_pairs, toy_vocab_size
from s2s_fast.models import ATTENTIONS, Seq2Seq, Seq2SeqConfig, sequence_loss

VOCAB = toy_vocab_size(8)


def _model(**overrides):
    options = dict(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=6, hidden_size=8, encoder_layers=2,
                   decoder_layers=2, dropout=0.0)
    options.update(overrides)
    return Seq2Seq(Seq2SeqConfig(**options)).double().eval()


def _batch(count=4, max_len=6, seed=0):
    return collate(make_pairs("reverse", count, num_symbols=8, max_len=max_len, seed=seed), PAD_ID, BOS_ID, EOS_ID)


def _step_logits(model, batch):
    encoded = model.encode(batch.src, batch.src_lengths)
    state = model.init_state(encoded)
    steps = []
    for t in range(batch.tgt_in.shape[1]):
        logits, state, _ = model.decode_step(batch.tgt_in[:, t], state, encoded)
        steps.append(logits)
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize("cell,attention,input_feeding,bidirectional",
                         list(itertools.product(["lstm", "gru"], ATTENTIONS, [True, False], [True, False])))
def test_teacher_forcing_equals_step_decoding(cell, attention, input_feeding, bidirectional):
    model = _model(cell=cell, attention=attention, input_feeding=input_feeding, bidirectional=bidirectional)
    batch = _batch()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    assert logits.shape == (*batch.tgt_in.shape, VOCAB)
    torch.testing.assert_close(logits, _step_logits(model, batch))
    loss = sequence_loss(logits, batch.tgt_out, PAD_ID)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cell,attention,input_feeding,decoder_layers",
                         list(itertools.product(["lstm", "gru"], ATTENTIONS, [True, False], [1, 2])))
def test_every_configuration_trains_and_decodes_under_cpu_autocast(cell, attention, input_feeding, decoder_layers):
    """Under torch.autocast("cpu") the bridge's and projections' products come out bfloat16 while the cells and the
    GRU layer keep float32, as torch's do: the decoder's step inputs meet in one dtype (a mix was refused). A CTC
    head trains and rescores beside every decoder."""
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, embed_dim=6, hidden_size=8,
                                  cell=cell, attention=attention, input_feeding=input_feeding,
                                  decoder_layers=decoder_layers, ctc_weight=0.3))
    batch = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, ctc = model(batch.src, batch.src_lengths, batch.tgt_in, ctc=True)
        loss = sequence_loss(logits.float(), batch.tgt_out, PAD_ID) + model.ctc_loss(ctc, batch.tgt_out)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        greedy = model.generate(batch.src, batch.src_lengths, max_len=5)
        beam = model.generate(batch.src, batch.src_lengths, beam_size=2, max_len=5)
        rescored = model.generate(batch.src, batch.src_lengths, beam_size=2, max_len=5, ctc_weight=0.3)
    assert len(greedy) == len(beam) == len(rescored) == batch.src.shape[0]


@pytest.mark.parametrize("attention", ["bahdanau", "luong-general", "luong-dot"])
def test_padded_source_is_never_attended(attention):
    model = _model(attention=attention)
    batch = _batch()
    scrambled = batch.src.clone()
    padding = torch.arange(batch.src.shape[1]) >= batch.src_lengths.unsqueeze(1)
    scrambled[padding] = 5
    torch.testing.assert_close(model(scrambled, batch.src_lengths, batch.tgt_in),
                               model(batch.src, batch.src_lengths, batch.tgt_in))
    encoded = model.encode(batch.src, batch.src_lengths)
    _, _, weights = model.decode_step(batch.tgt_in[:, 0], model.init_state(encoded), encoded)
    assert torch.count_nonzero(weights[padding]) == 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_an_empty_batch_runs_through_forward(cell):
    model = _model(cell=cell).train()
    empty = torch.zeros(0, 3, dtype=torch.long)
    logits = model(empty, torch.zeros(0, dtype=torch.long), empty[:, :2])
    assert logits.shape == (0, 2, VOCAB)


def test_padded_targets_do_not_count_in_the_loss():
    model = _model()
    batch = _batch()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    noisy = logits.clone()
    noisy[batch.tgt_out == PAD_ID] = 100.0
    torch.testing.assert_close(sequence_loss(noisy, batch.tgt_out, PAD_ID), sequence_loss(logits, batch.tgt_out,
                                                                                         PAD_ID))


def test_sequence_loss_takes_any_integer_ids_and_keeps_their_shape_unreduced():
    logits = torch.randn(3, 5, 7, dtype=torch.float64)
    targets = torch.randint(1, 7, (3, 5))
    targets[0, 3:] = PAD_ID
    each = sequence_loss(logits, targets, PAD_ID, reduction="none")
    expected = -torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1) * (targets != PAD_ID)
    torch.testing.assert_close(each, expected)  # float64 logits keep float64
    torch.testing.assert_close(sequence_loss(logits, targets, PAD_ID, reduction="sum"), each.sum())
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(sequence_loss(logits, targets.to(dtype), PAD_ID), sequence_loss(logits, targets,
                                                                                                  PAD_ID))
    with pytest.raises(ValueError, match="integer dtype, got torch.float32"):
        sequence_loss(logits, targets.float(), PAD_ID)
    with pytest.raises(ValueError, match=r"targets \(5, 3\) must be logits \(3, 5, 7\) without"):
        sequence_loss(logits, targets.t(), PAD_ID)


def test_sequence_loss_widens_half_precision_and_keeps_float64():
    """It cast every dtype to float32, float64 too: a float64 model's loss and gradients came out in single precision
    (gradcheck failed through it)."""
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 3], [4, 1, PAD_ID]])
    assert sequence_loss(logits, targets, PAD_ID).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: sequence_loss(x, targets, PAD_ID, label_smoothing=0.1), (logits,))
    for dtype in (torch.float16, torch.bfloat16):
        assert sequence_loss(logits.detach().to(dtype), targets, PAD_ID).dtype == torch.float32


@pytest.mark.parametrize("overrides", [dict(), dict(input_feeding=False), dict(attention="none"),
                                       dict(decoder_layers=1), dict(attention="luong-dot", cell="gru")],
                         ids=["two decoder layers", "no input feeding", "no attention", "one-op decoder", "luong"])
@pytest.mark.parametrize("sampling_rate", [0.0, 0.5])
def test_a_target_of_no_steps_gives_empty_logits_in_every_configuration(overrides, sampling_rate):
    """The step loops stacked nothing (and scheduled sampling read step 0) where the one-op decoder gave [B, 0, V]."""
    model = _model(**overrides).train()
    batch = _batch()
    logits = model(batch.src, batch.src_lengths, batch.tgt_in[:, :0], sampling_rate=sampling_rate)
    assert logits.shape == (len(batch.src), 0, VOCAB) and logits.dtype == torch.float64
    sequence_loss(logits, batch.tgt_out[:, :0], PAD_ID, reduction="sum").backward()


def test_a_model_on_the_meta_device_runs_forward():
    """As the drop-in modules do: the ids' range is not read from a meta tensor (it has no values)."""
    model = _model().to("meta")
    src, tgt_in = (torch.empty(2, n, dtype=torch.long, device="meta") for n in (4, 3))
    logits = model(src, torch.tensor([4, 2]), tgt_in)
    assert logits.shape == (2, 3, VOCAB) and logits.is_meta
    with pytest.raises(ValueError, match="src_lengths must hold values .* not be on the meta device"):
        model(src, torch.tensor([4, 2], device="meta"), tgt_in)


def test_tied_embeddings_share_the_weight():
    model = _model(embed_dim=8, tie_embeddings=True)
    assert model.output.weight is model.tgt_embed.weight
    names = [name for name, _ in model.named_parameters()]
    assert "output.weight" not in names


@pytest.mark.parametrize("overrides,pattern", [
    (dict(cell="rnn"), "cell must be one of"),
    (dict(attention="luong"), "attention must be one of"),
    (dict(hidden_size=7), "even hidden_size"),
    (dict(tie_embeddings=True), "embed_dim == hidden_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(eos_id=VOCAB), "eos_id"),
    (dict(bos_id=0), "must differ"),
    (dict(encoder_layers=0), "encoder_layers"),
    (dict(backend="fast"), "unknown backend"),
    (dict(dropout="x"), "Seq2SeqConfig: dropout must be a number, got 'x'"),
    (dict(dropout=float("nan")), "Seq2SeqConfig: dropout must be a finite number"),
    (dict(hidden_size=True), "Seq2SeqConfig: hidden_size must be an integer, got True"),
    (dict(bidirectional="maybe"), "Seq2SeqConfig: bidirectional must be true or false"),
    (dict(cell=3), "Seq2SeqConfig: cell must be text"),
    (dict(attention="luong-general", attention_size=7), "attention_size sizes Bahdanau's .* 'luong-general' has no"),
    (dict(attention="none", attention_size=7), "'none' has no such size"),
    (dict(ctc_weight=1.0), "ctc_weight must be in \\[0, 1\\)"),
    (dict(ctc_weight=-0.1), "ctc_weight must be in \\[0, 1\\)"),
    (dict(ctc_weight=float("nan")), "ctc_weight must be a finite number"),
])
def test_config_errors(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        _model(**overrides)


@pytest.mark.parametrize("backend", ["cpu", "aten", "reference"])
@pytest.mark.parametrize("cell,attention", list(itertools.product(["lstm", "gru"], ATTENTIONS)))
def test_a_backend_is_refused_at_construction_exactly_where_the_model_would_fail_on_it(backend, cell, attention):
    try:
        Seq2SeqConfig(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, cell=cell, attention=attention, backend=backend)
        refused = None
    except ValueError as error:
        refused = str(error)
    model, batch = _model(cell=cell, attention=attention, dropout=0.1).float().train(), _batch()
    try:
        with use_backend(backend):
            model(batch.src, batch.src_lengths, batch.tgt_in).sum().backward()
            model.eval()
            for beam_size in (1, 2):
                model.generate(batch.src, batch.src_lengths, beam_size=beam_size, max_len=4)
        failed = None
    except BackendError as error:
        failed = str(error)
    assert (refused is None) == (failed is None), (refused, failed)
    if refused:
        op = re.search(r"cannot serve (\w+)", failed).group(1)
        assert re.search(rf"backend '{backend}' does not implement {op}, which an? (LSTM|GRU) model", refused), refused


def test_config_values_are_coerced_where_their_meaning_is_plain():
    config = Seq2SeqConfig(src_vocab_size="5", tgt_vocab_size=7.0, dropout="1e-1", bidirectional="False")
    assert (config.src_vocab_size, config.tgt_vocab_size, config.dropout, config.bidirectional) == (5, 7, 0.1, False)
    assert type(config.src_vocab_size) is int and type(config.tgt_vocab_size) is int


def test_a_saved_configuration_with_an_attention_size_its_attention_ignored_still_loads():
    values = _model(attention="luong-general").config.to_dict()
    assert Seq2SeqConfig.from_dict({**values, "attention_size": 7}).attention_size is None


def test_config_round_trip():
    config = Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=7, attention="luong-dot")
    assert Seq2SeqConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown field"):
        Seq2SeqConfig.from_dict({**config.to_dict(), "heads": 4})


def test_bad_model_input():
    model = _model()
    batch = _batch()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(batch.src + VOCAB, batch.src_lengths, batch.tgt_in)
    with pytest.raises(ValueError, match=r"src_lengths must lie in \[1, S\]"):
        model(batch.src, torch.zeros_like(batch.src_lengths), batch.tgt_in)
    with pytest.raises(ValueError, match="src_lengths must be integer"):
        model(batch.src, batch.src_lengths[:2], batch.tgt_in)
    with pytest.raises(TypeError, match="int64"):
        model(batch.src.float(), batch.src_lengths, batch.tgt_in)
    with pytest.raises(ValueError, match="batch"):
        model(batch.src, batch.src_lengths, batch.tgt_in[:2])


def test_learns_to_reverse_sequences():
    """A small attention model reaches >= 95% exact match on held-out reversals in well under a minute."""
    torch.manual_seed(0)
    config = Seq2SeqConfig(src_vocab_size=toy_vocab_size(10), tgt_vocab_size=toy_vocab_size(10), embed_dim=32,
                           hidden_size=64, encoder_layers=1, decoder_layers=1, dropout=0.0)
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = make_pairs("reverse", 64 * 400, min_len=3, max_len=8, seed=1)
    held_out = make_pairs("reverse", 300, min_len=3, max_len=8, seed=2)
    training = {tuple(source) for source, _ in train}
    held_out = [pair for pair in held_out if tuple(pair[0]) not in training]
    assert len(held_out) > 200
    for step in range(400):
        batch = collate(train[step * 64:(step + 1) * 64], PAD_ID, BOS_ID, EOS_ID)
        loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    batch = collate(held_out, PAD_ID, BOS_ID, EOS_ID)
    hypotheses = model.generate(batch.src, batch.src_lengths)
    accuracy = sum(h == target for h, (_, target) in zip(hypotheses, held_out)) / len(held_out)
    assert accuracy >= 0.95, accuracy


def test_presets_build_models():
    from s2s_fast.models import PRESETS, preset_config

    for name in PRESETS:
        config = preset_config(name, 30, 40, dropout=0.0)
        assert config.dropout == 0.0 and config.src_vocab_size == 30
        Seq2Seq(config)
    with pytest.raises(ValueError, match="unknown model preset"):
        preset_config("huge", 3, 3)


def test_arguments_of_the_wrong_kind_are_refused_in_words():
    """Each was taken silently (a NaN or negative label smoothing as 0, a True sampling rate as 1, an invalid
    attention_size of a Luong model dropped) or failed deep inside (a dict config, bool or complex lengths)."""
    logits, targets = torch.randn(2, 3, 7), torch.randint(1, 7, (2, 3))
    for smoothing in (-0.5, float("nan"), 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="sequence_loss: label_smoothing must be a number in \\[0, 1\\]"):
            sequence_loss(logits, targets, PAD_ID, label_smoothing=smoothing)
    smoothed = sequence_loss(logits, targets, PAD_ID, label_smoothing=0.1)
    assert smoothed != sequence_loss(logits, targets, PAD_ID)
    for same in (torch.tensor(0.1), torch.tensor(0.1).numpy()):  # torch's cross_entropy takes these too
        assert sequence_loss(logits, targets, PAD_ID, label_smoothing=same) == smoothed
    with pytest.raises(TypeError, match="config must be a Seq2SeqConfig \\(Seq2SeqConfig.from_dict reads a dict\\)"):
        Seq2Seq({"src_vocab_size": 9, "tgt_vocab_size": 9})
    model = _model()
    src, lengths, tgt = torch.randint(3, 9, (2, 4)), torch.tensor([4, 2]), torch.randint(3, 9, (2, 3))
    for rate in (True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="sampling_rate must be a number in \\[0, 1\\]"):
            model(src, lengths, tgt, sampling_rate=rate)
    for bad in (torch.tensor([True, True]), [True, True], torch.tensor([4, 2], dtype=torch.complex64)):
        for call in (lambda: model(src, bad, tgt), lambda: model.generate(src, bad)):
            with pytest.raises(ValueError, match="src_lengths must be integer"):
                call()
    for size, message in (("x", "an integer"), (-5, "a positive integer or None"), (0, "a positive integer")):
        with pytest.raises(ValueError, match=f"attention_size must be {message}"):
            Seq2SeqConfig.from_dict(dict(src_vocab_size=9, tgt_vocab_size=9, attention="luong-dot",
                                         attention_size=size))
    for size in (64, 64.0):  # an old saved configuration
        assert Seq2SeqConfig.from_dict(dict(src_vocab_size=9, tgt_vocab_size=9, attention="luong-dot",
                                            attention_size=size)).attention_size is None
    # Wide unsigned lengths read as the other integers (torch's min had no kernel for them).
    expected = model(src, lengths, tgt)
    for unsigned in (torch.uint16, torch.uint32, torch.uint64):
        torch.testing.assert_close(model(src, lengths.to(unsigned), tgt), expected)
        assert model.generate(src, lengths.to(unsigned)) == model.generate(src, lengths)


def _ctc_reference(model, batch, reading_targets):
    """CTC's loss of each row's target in reading order, computed row by row from the head's scores, per token."""
    scores = model.ctc_scores(model.encode(batch.src, batch.src_lengths))
    total = 0.0
    for row, target in enumerate(reading_targets):
        frames = int(scores.lengths[row])
        total = total + torch.nn.functional.ctc_loss(
            scores.log_probs[row, :frames].unsqueeze(1), torch.tensor([target]), torch.tensor([frames]),
            torch.tensor([len(target)]), blank=PAD_ID, reduction="sum", zero_infinity=True)
    return total / sum(len(target) for target in reading_targets)


@pytest.mark.parametrize("reverse_target", [False, True])
def test_ctc_loss_reads_each_target_in_reading_order_over_its_own_frames(reverse_target):
    """ctc_loss takes the decoder's tgt_out (writing order, EOS, padding) and scores each row's target in reading
    order over its source's frames alone: equal to CTC row by row, whichever direction the decoder writes."""
    torch.manual_seed(0)
    model = _model(ctc_weight=0.3, reverse_target=reverse_target)
    pairs = make_pairs("reverse", 5, num_symbols=8, min_len=2, max_len=6, seed=3)
    written = [(source, model.config.writing_order(target)) for source, target in pairs]
    batch = collate(written, PAD_ID, BOS_ID, EOS_ID)
    logits, scores = model(batch.src, batch.src_lengths, batch.tgt_in, ctc=True)
    assert torch.equal(logits, model(batch.src, batch.src_lengths, batch.tgt_in))
    frames = 2 * batch.src_lengths
    assert scores.log_probs.shape == (5, 2 * batch.src.shape[1], VOCAB) and torch.equal(scores.lengths, frames)
    # Frames 2s and 2s + 1 are source position s's: the head's first and second V scores there.
    memory = model.encode(batch.src, batch.src_lengths).memory
    head = model.ctc_head(memory).unflatten(-1, (2, VOCAB)).log_softmax(-1)  # [B, S, 2, V]
    torch.testing.assert_close(scores.log_probs[:, 0::2], head[:, :, 0])
    torch.testing.assert_close(scores.log_probs[:, 1::2], head[:, :, 1])
    loss = model.ctc_loss(scores, batch.tgt_out)
    expected = _ctc_reference(model, batch, [target for _, target in pairs])
    torch.testing.assert_close(loss, expected)
    # The frames past a row's source are not read: changing them leaves the loss alone.
    changed = scores._replace(log_probs=torch.where(
        (torch.arange(scores.log_probs.shape[1]) < frames.unsqueeze(1)).unsqueeze(2), scores.log_probs, 0.0))
    torch.testing.assert_close(model.ctc_loss(changed, batch.tgt_out), loss)


def test_ctc_loss_trains_the_encoder_and_its_head_and_spares_an_unalignable_target():
    """The CTC loss's gradient reaches the head and the encoder but not the decoder; a target with more tokens than
    its row's frames can emit (4 from one letter's 2 frames) adds 0 and no gradient, as torch's zero_infinity."""
    torch.manual_seed(0)
    model = _model(ctc_weight=0.5).train()
    pairs = [([3], [4, 5, 6, 7]), ([3, 4, 5], [5, 4, 3])]
    batch = collate(pairs, PAD_ID, BOS_ID, EOS_ID)
    _, scores = model(batch.src, batch.src_lengths, batch.tgt_in, ctc=True)
    loss = model.ctc_loss(scores, batch.tgt_out)
    # The unalignable row counts as 0 in the sum; its tokens still count in the mean's denominator.
    expected = _ctc_reference(model, collate(pairs[1:], PAD_ID, BOS_ID, EOS_ID), [pairs[1][1]]) * 3 / 7
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.ctc_head.weight.grad.abs().sum() > 0
    assert model.encoder.weight_ih_l0.grad.abs().sum() > 0
    assert model.decoder.weight_ih_l0.grad is None and model.output.weight.grad is None
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_model_without_a_ctc_head_refuses_ctc_and_bad_targets_are_refused():
    model = _model()
    assert model.ctc_head is None
    batch = _batch()
    with pytest.raises(ValueError, match="has none \\(its ctc_weight is 0\\)"):
        model(batch.src, batch.src_lengths, batch.tgt_in, ctc=True)
    with pytest.raises(ValueError, match="no CTC head"):
        model.ctc_scores(model.encode(batch.src, batch.src_lengths))
    model = _model(ctc_weight=0.2)
    _, scores = model(batch.src, batch.src_lengths, batch.tgt_in, ctc=True)
    with pytest.raises(ValueError, match="followed by EOS"):
        model.ctc_loss(scores, batch.tgt_in)  # BOS first, no EOS
    with pytest.raises(ValueError, match="integer token ids"):
        model.ctc_loss(scores, batch.tgt_out[:2])
