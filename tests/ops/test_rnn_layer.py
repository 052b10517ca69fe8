"""lstm_layer and gru_layer on every fused backend against the reference: forward and every gradient on awkward
sizes, both directions, per-row lengths (zero-length rows included), strided inputs, float16/bfloat16 where the
backend runs them here. The Triton layers' two schedules are each tested in test_triton.py; here auto picks."""

import functools

import pytest
import torch
from inputs import rnn_inputs, strided

from s2s_fast import functional as F
from s2s_fast import reference
from s2s_fast.testing import compare_with_reference

OPS = ["lstm_layer", "gru_layer"]
# T, B, I, H: B = 17, H = 33 two Triton batch and hidden tiles. LSTM: H = 256, 600 and 1024 give the cuda persistent
# kernel 2, 5 and 8 units per block on 132 multiprocessors (several blocks; full and partial tensor-core tiles).
# (The cuda backend runs its GRU cell in the reference time loop.)
LSTM_SHAPES = [(1, 1, 1, 1), (5, 4, 3, 6), (7, 3, 5, 13), (4, 17, 9, 33), (6, 8, 64, 256), (4, 5, 32, 600),
               (3, 16, 16, 1024)]
GRU_SHAPES = [(1, 1, 1, 1), (5, 4, 3, 6), (7, 3, 5, 13), (4, 17, 9, 33), (6, 8, 64, 128)]
CASES = [("lstm_layer", *shape) for shape in LSTM_SHAPES] + [("gru_layer", *shape) for shape in GRU_SHAPES]


def _lengths(steps, batch, with_lengths):
    if not with_lengths:
        return None
    lengths = torch.randint(0, steps + 1, (batch,))
    lengths[0] = steps
    lengths[-1] = 0 if batch > 1 else steps
    return lengths


def _run(backend, op, args, lengths, reverse, dtype=torch.float32):
    lengths = None if lengths is None else lengths.to(backend.device)
    backend.skip_unless_served(op, args, dtype, lengths=lengths, reverse=reverse)
    backend.check(functools.partial(getattr(F, op), lengths=lengths, reverse=reverse, backend=backend.name),
                  functools.partial(getattr(reference, op), lengths=lengths, reverse=reverse), args, dtype)


@pytest.mark.parametrize("op,steps,batch,input_size,hidden", CASES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_matches_reference(backend, poisoned_allocations, op, steps, batch, input_size, hidden, reverse,
                           with_lengths):
    backend.skip_if_too_big_to_run_here(hidden)
    args = rnn_inputs(op, batch, input_size, hidden, steps=steps)
    _run(backend, op, args, _lengths(steps, batch, with_lengths), reverse)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("steps,batch,input_size,hidden", [(5, 4, 3, 6), (4, 17, 9, 33), (6, 8, 64, 256)])
@pytest.mark.parametrize("reverse", [False, True])
def test_low_precision_error_within_twice_the_reference(backend, op, dtype, steps, batch, input_size, hidden,
                                                         reverse):
    if dtype not in backend.low_precision:
        pytest.skip(f"{backend.name} does not run {dtype} on {backend.device.type} here")
    args = rnn_inputs(op, batch, input_size, hidden, steps=steps, dtype=torch.float64)
    _run(backend, op, args, _lengths(steps, batch, True), reverse, dtype)


@pytest.mark.parametrize("op", ["gru_layer"])
@pytest.mark.parametrize("missing", ["bias_ih", "bias_hh"])
def test_one_bias_gets_its_own_gradient(backend, op, missing):
    """The two GRU biases get different gradients (r scales only the hidden part of the new gate)."""
    args = rnn_inputs(op, 3, 5, 7, steps=4)
    _run(backend, op, {**args, missing: None}, None, reverse=False)


@pytest.mark.parametrize("op", OPS)
def test_strided_inputs_without_bias(backend, op):
    args = {name: strided(value) for name, value in rnn_inputs(op, 6, 10, 32, steps=9, bias=False).items()}
    assert not args["input"].is_contiguous()
    _run(backend, op, args, torch.tensor([9, 2, 0, 5, 1, 9]), reverse=True)


def _poisoning_padding(op, **options):
    """getattr(F, op) called with NaN at every padded step of its input (options["lengths"]; the input's gradient
    still flows)."""
    def call(input, *args, **kwargs):
        lengths = options["lengths"]
        padded = torch.arange(input.shape[0], device=input.device).unsqueeze(1) >= lengths.unsqueeze(0)
        return getattr(F, op)(input.masked_fill(padded.unsqueeze(2), float("nan")), *args, **kwargs, **options)
    return call


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reverse", [False, True])
def test_what_lies_in_the_padding_reaches_no_output_and_no_gradient(backend, op, reverse):
    """NaN at the padded steps (torch.empty's garbage, say): outputs and every gradient as the reference's on a
    clean input. The layers whose weight gradients are products over all steps would take 0 * NaN there."""
    _check_poisoned(backend, op, _poisoning_padding, torch.tensor([6, 2, 0, 4, 6]), reverse)


def _check_poisoned(backend, op, poisoning, lengths, reverse):
    """backend.check of ``poisoning(op, ...)``'s call on the backend against the reference on clean inputs."""
    args = rnn_inputs(op, 5, 7, 9, steps=6)
    backend.skip_unless_served(op, args, torch.float32, lengths=lengths.to(backend.device), reverse=reverse)
    lengths = lengths.to(backend.device)
    backend.check(poisoning(op, lengths=lengths, reverse=reverse, backend=backend.name),
                  functools.partial(getattr(reference, op), lengths=lengths, reverse=reverse), args)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("poisoned", ["padding", "empty_rows"])
def test_the_reference_backend_keeps_the_padding_and_empty_rows_states_out_too(op, poisoned):
    poisoning, lengths = {"padding": (_poisoning_padding, [6, 2, 0, 4, 6]),
                          "empty_rows": (_poisoning_empty_rows, [6, 0, 3, 0, 6])}[poisoned]
    lengths = torch.tensor(lengths)
    args = rnn_inputs(op, 5, 7, 9, steps=6, dtype=torch.float64)
    compare_with_reference(poisoning(op, lengths=lengths, backend="reference"),
                           functools.partial(getattr(reference, op), lengths=lengths), args)


def _poisoning_empty_rows(op, **options):
    """getattr(F, op) called with NaN (hx) and inf (an LSTM's cx) in the initial state of every row of length 0
    (options["lengths"]). Those rows' final states must be that state as given; they are checked to be, then put back
    to the clean state for the comparison (the initial state's gradient there is then the final state's, as the
    reference's on a clean state)."""
    def call(**kwargs):
        empty = (options["lengths"] == 0).unsqueeze(1)
        names = ("hx", "cx") if op == "lstm_layer" else ("hx",)
        given = {name: kwargs[name] for name in names}
        poisoned = {name: kwargs[name].masked_fill(empty, value) for name, value in zip(names, (float("nan"),
                                                                                             float("inf")))}
        output, *finals = getattr(F, op)(**{**kwargs, **poisoned}, **options)
        rows = empty.squeeze(1)
        assert bool(finals[0][rows].isnan().all()), "an empty row's final hidden state is not its initial one"
        if len(finals) == 2:
            assert bool(finals[1][rows].isinf().all()), "an empty row's final cell state is not its initial one"
        return (output, *(torch.where(empty, given[name], final) for name, final in zip(names, finals)))
    return call


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("reverse", [False, True])
def test_the_initial_state_of_an_empty_row_reaches_only_its_final_state(backend, op, reverse):
    """NaN and inf in the initial state of a row of length 0: no output and no gradient of another row or of the
    weights sees them (the layers whose products run every row's state would take 0 * NaN there); the row's final
    state is its initial state as given."""
    _check_poisoned(backend, op, _poisoning_empty_rows, torch.tensor([6, 0, 3, 0, 6]), reverse)


@pytest.mark.parametrize("op", OPS)
def test_an_empty_rows_initial_state_takes_its_final_states_gradient(backend, op):
    """The gradient of hx (and cx) at a row of length 0 is the gradient its final state receives, exactly, NaN and inf
    in that state as given notwithstanding (the comparisons above restore the state for their own outputs)."""
    lengths = torch.tensor([6, 0, 3, 0, 6])
    args = rnn_inputs(op, 5, 7, 9, steps=6)
    backend.skip_unless_served(op, args, torch.float32, lengths=lengths.to(backend.device))
    args = {name: value.to(backend.device) if isinstance(value, torch.Tensor) else value for name, value in args.items()}
    lengths = lengths.to(backend.device)
    empty = lengths == 0
    names = ("hx", "cx") if op == "lstm_layer" else ("hx",)
    states = {name: args[name].detach().clone() for name in names}
    for name, value in zip(names, (float("nan"), float("inf"))):
        states[name][empty] = value
        states[name].requires_grad_(True)
    output, *finals = getattr(F, op)(**{**args, **states}, lengths=lengths, backend=backend.name)
    upstream = [torch.randn_like(final) for final in finals]
    grads = torch.autograd.grad([output, *finals], list(states.values()), [torch.randn_like(output), *upstream])
    for name, grad, final_grad in zip(names, grads, upstream):
        torch.testing.assert_close(grad[empty], final_grad[empty], rtol=0, atol=0, msg=name)
        assert bool(grad.isfinite().all()), name
