"""lstm_attention_decoder and gru_attention_decoder (a teacher-forced input-feeding LSTM or GRU decoder with additive
attention, one op) on every backend that implements them (the cpu backend's fused steps) against the reference's
step-by-step composition: outputs, final state, attention weights and every gradient (the dropout mask's included) in
float64 and float32 within the dtype's tolerance, with and without the source mask, the dropout mask and biases,
upstream gradients on any subset of the outputs, one input at a time recording a gradient, one step and none, strided
inputs, a source row with no valid key; the composition on the backends without their own (triton and cuda through
the interpreter and the emulation here) and on auto's choices; the model's training forward through it against its
own step loop; bad arguments; and the operators through torch.library.opcheck and torch.compile."""

import functools

import pytest
import torch

from s2s_fast import backends
from s2s_fast import functional as F
from s2s_fast.functional import InputError, InputTypeError
from s2s_fast.testing import compare_with_reference, forward_backward

OPS = ["lstm_attention_decoder", "gru_attention_decoder"]
# Where each output is: (output, state..., weights).
STATE = {"lstm_attention_decoder": (1, 2), "gru_attention_decoder": (1,)}
WEIGHTS = {"lstm_attention_decoder": 3, "gru_attention_decoder": 2}
each_op = pytest.mark.parametrize("op", OPS)

def decoder_inputs(op, steps=5, batch=3, embed=4, hidden=6, keys=7, attn=5, value_size=6, *, mask="random",
                   dropout=True, bias=True, dtype=torch.float64, seed=0, initialised=False):
    """A decoder call's arguments, drawn with scale 0.5 (every path through the gates exercised), or with
    ``initialised`` weights scaled by 1 / sqrt(fan-in) as torch.nn initialises them (for the float32 error rule: with
    large weights rounding errors grow through the steps by factors that hang on the draw)."""
    generator = torch.Generator().manual_seed(seed)

    def t(*shape, scale=0.5):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    def w(*shape):
        return t(*shape, scale=shape[-1] ** -0.5 if initialised else 0.5)

    source_mask = None
    if mask != "none":
        source_mask = torch.rand(batch, keys, generator=generator) > 0.4
        source_mask[:, 0] = True
        if mask == "empty_row":
            source_mask[batch // 2] = False
    dropout_mask = None
    if dropout:
        dropout_mask = ((torch.rand(steps, batch, hidden, generator=generator) > 0.3).to(dtype) / 0.7)
    gates = 4 if op.startswith("lstm") else 3
    args = dict(input=t(steps, batch, embed), hx=t(batch, hidden))
    if gates == 4:
        args["cx"] = t(batch, hidden)
    return dict(args, feed=t(batch, hidden), weight_ih=w(gates * hidden, embed + hidden),
                weight_hh=w(gates * hidden, hidden), bias_ih=t(gates * hidden) if bias else None,
                bias_hh=t(gates * hidden) if bias else None, query_weight=w(attn, hidden),
                key_proj=t(batch, keys, attn), v=w(attn), values=t(batch, keys, value_size), mask=source_mask,
                combine_weight=w(hidden, hidden + value_size), dropout_mask=dropout_mask)


def _on(backend, args):
    return {name: value.to(backend.device) if isinstance(value, torch.Tensor) else value
            for name, value in args.items()}


def _bound(op, name):
    return functools.partial(getattr(F, op), backend=name)


@pytest.mark.parametrize("options", [dict(), dict(dropout=False), dict(mask="none"), dict(bias=False),
                                     dict(mask="empty_row"), dict(steps=1), dict(steps=9, batch=1),
                                     dict(hidden=13, attn=3, value_size=9, embed=1)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@each_op
def test_matches_the_reference_in_float64(backend, op, options):
    compare_with_reference(_bound(op, backend.name), _bound(op, "reference"),
                           _on(backend, decoder_inputs(op, **options)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("options", [dict(), dict(dropout=False, mask="none")], ids=["masks", "no-masks"])
@each_op
def test_matches_the_reference_in_float32(backend, op, options, seed):
    # float32's tolerance with the weight gradients' sums over every step and row (the fused backward sums each in one
    # product, the reference step by step); weights initialised as torch.nn's, under which rounding errors do not
    # grow through the steps by factors that hang on the draw (no failure in 20 seeds of each case here).
    steps, batch = 9, 16
    args = decoder_inputs(op, steps=steps, batch=batch, embed=8, hidden=32, keys=11, attn=16, value_size=32,
                          initialised=True, seed=seed, dtype=torch.float32, **options)
    compare_with_reference(_bound(op, backend.name), _bound(op, "reference"), _on(backend, args),
                           summed_terms=steps * batch)


@pytest.mark.parametrize("used", ["output", "state", "weights", "output+weights"])
@each_op
def test_gradients_of_any_subset_of_the_outputs(backend, op, used):
    args = decoder_inputs(op)
    index = {"output": (0,), "state": STATE[op], "weights": (WEIGHTS[op],), "output+weights": (0, WEIGHTS[op])}[used]

    def picked(name):
        def run(**inputs):
            outputs = getattr(F, op)(**inputs, backend=name)
            return tuple(outputs[i] for i in index)
        return run

    compare_with_reference(picked(backend.name), picked("reference"), _on(backend, args))


@pytest.mark.parametrize("differentiated", ["dropout_mask", "values", "combine_weight"])
@each_op
def test_one_input_recording_a_gradient(backend, op, differentiated):
    args = _on(backend, decoder_inputs(op))

    def only(name):
        def run(**inputs):
            inputs = {key: value.detach() if key != differentiated and isinstance(value, torch.Tensor) else value
                      for key, value in inputs.items()}
            return getattr(F, op)(**inputs, backend=name)
        return run

    compare_with_reference(only(backend.name), only("reference"), args)


@pytest.mark.parametrize("decoder", OPS)
@pytest.mark.parametrize("op", ["additive_attention"])  # the fixture's backends with the attention, the cells too
def test_a_backend_without_its_own_composes_it_from_its_ops(backend, op, decoder):
    if backends.implements(backend.name, decoder):
        pytest.skip(f"{backend.name} has its own {decoder}")
    if backend.name == "aten":
        pytest.skip("aten has no additive_attention (test_a_backend_composes_it_only_from_ops_it_serves)")
    args = decoder_inputs(decoder, steps=3, batch=2, embed=4, hidden=8, keys=5, attn=8, value_size=8,
                          dtype=torch.float32, initialised=True)
    compare_with_reference(_bound(decoder, backend.name), _bound(decoder, "reference"), _on(backend, args))


@each_op
def test_no_steps_passes_the_state_through(backend, op):
    args = _on(backend, decoder_inputs(op, steps=0))
    outputs, grads, _ = forward_backward(_bound(op, backend.name), args)
    assert outputs[0].shape == (0, 3, 6) and outputs[WEIGHTS[op]].shape == (0, 3, 7)
    torch.testing.assert_close(outputs[1], args["hx"])
    if op.startswith("lstm"):
        torch.testing.assert_close(outputs[2], args["cx"])
    assert grads["weight_ih"] is None or torch.count_nonzero(grads["weight_ih"]) == 0
    compare_with_reference(_bound(op, backend.name), _bound(op, "reference"), args)


@each_op
def test_strided_inputs(backend, op):
    args = decoder_inputs(op)
    args["input"] = args["input"].transpose(0, 1).contiguous().transpose(0, 1)
    args["key_proj"] = args["key_proj"].transpose(1, 2).contiguous().transpose(1, 2)
    args["values"] = args["values"][:, :, :].transpose(0, 1).contiguous().transpose(0, 1)
    args["weight_ih"] = args["weight_ih"].t().contiguous().t()
    compare_with_reference(_bound(op, backend.name), _bound(op, "reference"), _on(backend, args))


@each_op
def test_without_gradients_it_keeps_nothing_and_matches(backend, op):
    args = _on(backend, decoder_inputs(op))
    with torch.no_grad():
        actual = getattr(F, op)(**args, backend=backend.name)
        expected = getattr(F, op)(**args, backend="reference")
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@each_op
def test_opcheck(backend, op):
    if backend.name != "cpu":
        pytest.skip("the cpu backend's operators")
    operator = getattr(torch.ops.s2s_fast, f"cpu_{op}_fwd").default
    args = decoder_inputs(op, steps=3, batch=2, embed=3, hidden=4, keys=5, attn=3, value_size=4)
    leaves = {name: value.requires_grad_() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
              for name, value in args.items()}
    torch.library.opcheck(operator, (*leaves.values(), True))
    no_masks = dict(leaves, mask=None, dropout_mask=None, bias_ih=None)
    torch.library.opcheck(operator, (*no_masks.values(), True))
    unsaved = {name: value.detach() if isinstance(value, torch.Tensor) else value for name, value in args.items()}
    torch.library.opcheck(operator, (*unsaved.values(), False))


def _backward_arguments(op, args):
    """The cpu backward operator's arguments for ``args`` (decoder_inputs), as the op's autograd formula passes them:
    upstream gradients, the inputs it reads, and what the forward operator saved."""
    lstm = op.startswith("lstm")
    forward = getattr(torch.ops.s2s_fast, f"cpu_{op}_fwd")(*args.values(), True)
    output, weights, saved = forward[0], forward[3 if lstm else 2], forward[4 if lstm else 3:]
    states = ("hx", "cx") if lstm else ("hx",)
    upstream = [torch.randn_like(output), *(torch.randn_like(args[name]).t().contiguous().t() for name in states),
                torch.randn_like(weights)]
    read = [args[name] for name in ("input", *states, "feed", "weight_ih", "weight_hh", "query_weight", "key_proj",
                                     "v", "values", "combine_weight", "dropout_mask")]
    return (*upstream, *read, output, weights, *saved)


@each_op
@pytest.mark.parametrize("steps,batch", [(3, 1), (0, 3), (2, 3)])
def test_the_backward_operator_keeps_its_schema_and_fake(backend, op, steps, batch):
    """Each gradient its own storage (at B = 1 a row of [B, 2H] is contiguous: a view of it would alias two
    outputs), and strides as the fake gives them with transposed states, gradients and feed (T = 0 included)."""
    if backend.name != "cpu":
        pytest.skip("the cpu backend's operators")
    args = decoder_inputs(op, steps=steps, batch=batch, embed=3, hidden=4, keys=5, attn=3, value_size=4)
    for name in ("hx", "cx", "feed"):
        if name in args:
            args[name] = args[name].t().contiguous().t()
    backward = getattr(torch.ops.s2s_fast, f"cpu_{op}_bwd").default
    arguments = _backward_arguments(op, args)
    grads = backward(*arguments)
    storages = [grad.untyped_storage().data_ptr() for grad in grads if grad.numel()]
    assert len(set(storages)) == len(storages)
    for grad in grads:
        assert grad.is_contiguous()
    torch.library.opcheck(backward, arguments)


@each_op
def test_compiles_whole_and_matches_eager(backend, op):
    if backend.name != "cpu":
        pytest.skip("the cpu backend's operators")
    args = decoder_inputs(op, initialised=True)

    def run(**inputs):
        outputs = getattr(F, op)(**inputs, backend=backend.name)
        return outputs[0].sum() + outputs[1].sum()

    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)
    eager_loss, eager_grads, _ = forward_backward(run, args)
    compiled_loss, compiled_grads, _ = forward_backward(compiled, args)
    torch.testing.assert_close(compiled_loss[0], eager_loss[0])
    for name, grad in eager_grads.items():
        if grad is not None:
            torch.testing.assert_close(compiled_grads[name], grad, msg=name)


@each_op
def test_auto_composes_each_ops_choice_where_no_backend_fuses_it(op, monkeypatch):
    # Without a fused backend for the call (float16 on a CPU: the cpu backend takes float32 and float64), auto runs
    # the reference's composition with each op on its own auto choice, not the reference backend's ops.
    args = decoder_inputs(op, dtype=torch.float16)
    name, impl = backends.resolve(op, torch.device("cpu"), tuple(args.values()))
    assert name == "auto" and impl.keywords == {"backend": "auto"}
    cell = "lstm_cell" if op.startswith("lstm") else "gru_cell"
    chosen = []
    real = getattr(F, cell)
    monkeypatch.setattr(F, cell, lambda *a, backend=None: chosen.append(backend) or real(*a, backend=backend))
    getattr(F, op)(**args)
    assert chosen == ["auto"] * 5


@each_op
def test_a_backend_composes_it_only_from_ops_it_serves(op):
    args = tuple(decoder_inputs(op).values())
    assert backends.resolve(op, torch.device("cpu"), args, backend="reference")[0] == "reference"
    with pytest.raises(backends.BackendError, match=f"does not implement additive_attention, which {op} is built of"):
        backends.resolve(op, torch.device("cpu"), args, backend="aten")


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@each_op
def test_the_models_training_forward_matches_its_step_loop(op, dropout, monkeypatch):
    from s2s_fast.models import Seq2Seq, Seq2SeqConfig
    from s2s_fast.models import seq2seq

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=13, embed_dim=8, hidden_size=12,
                                  cell=op.partition("_")[0], dropout=dropout)).double()
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


@each_op
def test_bad_arguments_are_refused_by_name(op):
    args = decoder_inputs(op)
    with pytest.raises(InputError, match="weight_ih must have shape"):
        getattr(F, op)(**dict(args, weight_ih=args["weight_ih"][:, 1:]))
    with pytest.raises(InputError, match="combine_weight must have shape"):
        getattr(F, op)(**dict(args, combine_weight=args["combine_weight"][:, 1:]))
    with pytest.raises(InputError, match="dropout_mask must have shape"):
        getattr(F, op)(**dict(args, dropout_mask=args["dropout_mask"][1:]))
    with pytest.raises(InputError, match="input must be"):
        getattr(F, op)(**dict(args, input=args["input"][0]))
    with pytest.raises(InputTypeError, match="mask must be a bool"):
        getattr(F, op)(**dict(args, mask=args["mask"].double()))
    with pytest.raises(InputTypeError, match="dtype"):
        getattr(F, op)(**dict(args, values=args["values"].float()))
    with pytest.raises(InputTypeError, match="query_weight must be a tensor"):
        getattr(F, op)(**dict(args, query_weight=None))
