"""lstm_attention_decoder (a teacher-forced input-feeding LSTM decoder with additive attention, one op) on every
backend that implements it (the cpu backend's fused steps) against the reference's step-by-step composition:
outputs, final state, attention weights and every gradient (the dropout mask's included) in float64 within rounding
and in float32 within three times the float32 reference's own error, with and without the source mask, the dropout
mask and biases, upstream gradients on any subset of the outputs, one step and none, strided inputs, a source row
with no valid key; the composition auto runs where no backend fuses the op; the model's training forward through it
against its own step loop; bad arguments; and the operators through torch.library.opcheck."""

import functools

import pytest
import torch

from s2s_fast import backends
from s2s_fast import functional as F
from s2s_fast.functional import InputError, InputTypeError
from s2s_fast.testing import compare_low_precision_with_reference, compare_with_reference, forward_backward

# float32's sums over steps, keys and batch rows: the fused steps' error against float64 was up to 2.1x the float32
# reference's (its products sum in another order), measured on the g2p sizes scaled down.
FLOAT32_ERROR_RATIO = 3.0


def decoder_inputs(steps=5, batch=3, embed=4, hidden=6, keys=7, attn=5, value_size=6, *, mask="random",
                   dropout=True, bias=True, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def t(*shape, scale=0.5):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    source_mask = None
    if mask != "none":
        source_mask = torch.rand(batch, keys, generator=generator) > 0.4
        source_mask[:, 0] = True
        if mask == "empty_row":
            source_mask[batch // 2] = False
    dropout_mask = None
    if dropout:
        dropout_mask = ((torch.rand(steps, batch, hidden, generator=generator) > 0.3).to(dtype) / 0.7)
    return dict(input=t(steps, batch, embed), hx=t(batch, hidden), cx=t(batch, hidden), feed=t(batch, hidden),
                weight_ih=t(4 * hidden, embed + hidden), weight_hh=t(4 * hidden, hidden),
                bias_ih=t(4 * hidden) if bias else None, bias_hh=t(4 * hidden) if bias else None,
                query_weight=t(attn, hidden), key_proj=t(batch, keys, attn), v=t(attn), values=t(batch, keys, value_size),
                mask=source_mask, combine_weight=t(hidden, hidden + value_size), dropout_mask=dropout_mask)


def _on(backend, args):
    return {name: value.to(backend.device) if isinstance(value, torch.Tensor) else value
            for name, value in args.items()}


def _bound(name):
    return functools.partial(F.lstm_attention_decoder, backend=name)


@pytest.mark.parametrize("options", [dict(), dict(dropout=False), dict(mask="none"), dict(bias=False),
                                     dict(mask="empty_row"), dict(steps=1), dict(steps=9, batch=1),
                                     dict(hidden=13, attn=3, value_size=9, embed=1)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_the_reference_in_float64(backend, options):
    compare_with_reference(_bound(backend.name), _bound("reference"), _on(backend, decoder_inputs(**options)))


@pytest.mark.parametrize("options", [dict(), dict(dropout=False, mask="none")], ids=["masks", "no-masks"])
def test_float32_error_within_three_times_the_reference(backend, options):
    args = decoder_inputs(steps=9, batch=16, embed=8, hidden=32, keys=11, attn=16, value_size=32, **options)
    compare_low_precision_with_reference(_bound(backend.name), _bound("reference"), _on(backend, args),
                                         torch.float32, ratio=FLOAT32_ERROR_RATIO)


@pytest.mark.parametrize("used", [(0,), (1, 2), (3,), (0, 3)], ids=["output", "state", "weights", "output+weights"])
def test_gradients_of_any_subset_of_the_outputs(backend, used):
    args = decoder_inputs()

    def picked(name):
        def run(**inputs):
            outputs = F.lstm_attention_decoder(**inputs, backend=name)
            return tuple(outputs[i] for i in used)
        return run

    compare_with_reference(picked(backend.name), picked("reference"), _on(backend, args))


@pytest.mark.parametrize("differentiated", ["dropout_mask", "values", "combine_weight"])
def test_one_input_recording_a_gradient(backend, differentiated):
    args = _on(backend, decoder_inputs())

    def only(name):
        def run(**inputs):
            inputs = {key: value.detach() if key != differentiated and isinstance(value, torch.Tensor) else value
                      for key, value in inputs.items()}
            return F.lstm_attention_decoder(**inputs, backend=name)
        return run

    compare_with_reference(only(backend.name), only("reference"), args)


@pytest.mark.parametrize("op", ["additive_attention"])  # the fixture's backends with the attention, the cells too
def test_a_backend_without_its_own_composes_it_from_its_ops(backend, op):
    if backends.implements(backend.name, "lstm_attention_decoder"):
        pytest.skip(f"{backend.name} has its own lstm_attention_decoder")
    if backend.name == "aten":
        pytest.skip("aten has no additive_attention (test_a_backend_composes_it_only_from_ops_it_serves)")
    args = decoder_inputs(steps=3, batch=2, embed=4, hidden=8, keys=5, attn=8, value_size=8, dtype=torch.float32)
    compare_low_precision_with_reference(_bound(backend.name), _bound("reference"), _on(backend, args),
                                         torch.float32, ratio=FLOAT32_ERROR_RATIO)


def test_no_steps_passes_the_state_through(backend):
    args = _on(backend, decoder_inputs(steps=0))
    outputs, grads, _ = forward_backward(_bound(backend.name), args)
    assert outputs[0].shape == (0, 3, 6) and outputs[3].shape == (0, 3, 7)
    torch.testing.assert_close(outputs[1], args["hx"])
    torch.testing.assert_close(outputs[2], args["cx"])
    assert grads["weight_ih"] is None or torch.count_nonzero(grads["weight_ih"]) == 0
    compare_with_reference(_bound(backend.name), _bound("reference"), args)


def test_strided_inputs(backend):
    args = decoder_inputs()
    args["input"] = args["input"].transpose(0, 1).contiguous().transpose(0, 1)
    args["key_proj"] = args["key_proj"].transpose(1, 2).contiguous().transpose(1, 2)
    args["values"] = args["values"][:, :, :].transpose(0, 1).contiguous().transpose(0, 1)
    args["weight_ih"] = args["weight_ih"].t().contiguous().t()
    compare_with_reference(_bound(backend.name), _bound("reference"), _on(backend, args))


def test_without_gradients_it_keeps_nothing_and_matches(backend):
    args = _on(backend, decoder_inputs())
    with torch.no_grad():
        actual = F.lstm_attention_decoder(**args, backend=backend.name)
        expected = F.lstm_attention_decoder(**args, backend="reference")
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_opcheck(backend):
    if backend.name != "cpu":
        pytest.skip("the cpu backend's operators")
    args = decoder_inputs(steps=3, batch=2, embed=3, hidden=4, keys=5, attn=3, value_size=4)
    leaves = {name: value.requires_grad_() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
              for name, value in args.items()}
    torch.library.opcheck(torch.ops.s2s_fast.cpu_lstm_attention_decoder_fwd.default, (*leaves.values(), True))
    no_masks = dict(leaves, mask=None, dropout_mask=None, bias_ih=None)
    torch.library.opcheck(torch.ops.s2s_fast.cpu_lstm_attention_decoder_fwd.default, (*no_masks.values(), True))
    unsaved = {name: value.detach() if isinstance(value, torch.Tensor) else value for name, value in args.items()}
    torch.library.opcheck(torch.ops.s2s_fast.cpu_lstm_attention_decoder_fwd.default, (*unsaved.values(), False))


def test_auto_composes_each_ops_choice_where_no_backend_fuses_it(monkeypatch):
    # Without a fused backend for the call (float16 on a CPU: the cpu backend takes float32 and float64), auto runs
    # the reference's composition with each op on its own auto choice, not the reference backend's ops.
    args = decoder_inputs(dtype=torch.float16)
    name, impl = backends.resolve("lstm_attention_decoder", torch.device("cpu"), tuple(args.values()))
    assert name == "auto" and impl.keywords == {"backend": "auto"}
    chosen = []
    real = F.lstm_cell
    monkeypatch.setattr(F, "lstm_cell", lambda *a, backend=None: chosen.append(backend) or real(*a, backend=backend))
    F.lstm_attention_decoder(**args)
    assert chosen == ["auto"] * 5


def test_a_backend_composes_it_only_from_ops_it_serves():
    args = tuple(decoder_inputs().values())
    assert backends.resolve("lstm_attention_decoder", torch.device("cpu"), args, backend="reference")[0] == "reference"
    with pytest.raises(backends.BackendError, match="does not implement additive_attention, which "
                                                    "lstm_attention_decoder is built of"):
        backends.resolve("lstm_attention_decoder", torch.device("cpu"), args, backend="aten")


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_models_training_forward_matches_its_step_loop(dropout, monkeypatch):
    from s2s_fast.models import Seq2Seq, Seq2SeqConfig
    from s2s_fast.models import seq2seq

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=13, embed_dim=8, hidden_size=12,
                                  dropout=dropout)).double()
    src = torch.randint(3, 11, (4, 6))
    lengths = torch.tensor([6, 3, 5, 1])
    tgt = torch.randint(3, 13, (4, 5))
    model.train()

    def loss_and_grads(one_op: bool):
        monkeypatch.setattr(seq2seq.Seq2Seq, "_one_op_decoder", property(lambda self: one_op))
        model.zero_grad()
        torch.manual_seed(1)  # the encoder's dropout between its layers: the same masks both ways
        if dropout:
            # The same masks both ways: every dropout call gets ones scaled as without dropout, so only the
            # shapes of the draws differ; this checks the equations, test_dropout the masks.
            monkeypatch.setattr(model.dropout, "forward", lambda x: x)
        logits = model(src, lengths, tgt)
        logits.sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fused_logits, fused_grads = loss_and_grads(True)
    loop_logits, loop_grads = loss_and_grads(False)
    torch.testing.assert_close(fused_logits, loop_logits)
    assert fused_grads.keys() == loop_grads.keys()
    for name in loop_grads:
        torch.testing.assert_close(fused_grads[name], loop_grads[name], msg=name)


def test_bad_arguments_are_refused_by_name():
    args = decoder_inputs()
    with pytest.raises(InputError, match="weight_ih must have shape"):
        F.lstm_attention_decoder(**dict(args, weight_ih=args["weight_ih"][:, 1:]))
    with pytest.raises(InputError, match="combine_weight must have shape"):
        F.lstm_attention_decoder(**dict(args, combine_weight=args["combine_weight"][:, 1:]))
    with pytest.raises(InputError, match="dropout_mask must have shape"):
        F.lstm_attention_decoder(**dict(args, dropout_mask=args["dropout_mask"][1:]))
    with pytest.raises(InputError, match="input must be"):
        F.lstm_attention_decoder(**dict(args, input=args["input"][0]))
    with pytest.raises(InputTypeError, match="mask must be a bool"):
        F.lstm_attention_decoder(**dict(args, mask=args["mask"].double()))
    with pytest.raises(InputTypeError, match="dtype"):
        F.lstm_attention_decoder(**dict(args, values=args["values"].float()))
    with pytest.raises(InputTypeError, match="query_weight must be a tensor"):
        F.lstm_attention_decoder(**dict(args, query_weight=None))
