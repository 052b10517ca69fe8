"""The aten backend (torch's own RNN kernels): what is its own beyond tests/ops (which run it against the reference
on every op's shapes, lengths, directions and dtypes): bias layouts, strided inputs, lengths of any integer dtype,
padding that never enters the state, and where auto routes calls to it."""

import functools

import pytest
import torch

import s2s_fast
from s2s_fast import backends
from s2s_fast import functional as F
from s2s_fast.testing import compare_with_reference


def _cell_args(gates, batch, input_size, hidden, dtype=torch.float64, bias=(True, True), lstm=True):
    t = functools.partial(torch.randn, dtype=dtype)
    args = dict(input=t(batch, input_size), hx=t(batch, hidden))
    if lstm:
        args["cx"] = t(batch, hidden)
    args.update(weight_ih=t(gates * hidden, input_size) / max(input_size, 1) ** 0.5,
                weight_hh=t(gates * hidden, hidden) / hidden ** 0.5,
                bias_ih=t(gates * hidden) if bias[0] else None, bias_hh=t(gates * hidden) if bias[1] else None)
    return args


def _layer_args(kind, steps, batch, input_size, hidden, lengths=None, reverse=False, dtype=torch.float64,
                bias=(True, True)):
    lstm = kind == "lstm"
    args = _cell_args(4 if lstm else 3, batch, input_size, hidden, dtype, bias, lstm)
    args["input"] = torch.randn(steps, batch, input_size, dtype=dtype)
    args.update(lengths=None if lengths is None else torch.tensor(lengths), reverse=reverse)
    return args


def _both(op):
    return (lambda **a: getattr(F, op)(**a, backend="aten"), lambda **a: getattr(F, op)(**a, backend="reference"))


# Beyond tests/ops' shapes: every row empty, every row full, no steps, no rows, float64 (torch.nn's padded path
# and the reference agree to float64 tolerance).
LAYER_SHAPES = [
    # steps, batch, input, hidden, lengths
    (6, 3, 3, 5, [0, 0, 0]),
    (6, 3, 3, 5, [6, 6, 6]),
    (0, 2, 3, 4, None),
    (3, 0, 3, 4, None),
    (5, 17, 13, 11, [5, 4, 3, 2, 1, 0, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("steps,batch,input_size,hidden,lengths", LAYER_SHAPES)
def test_layer_edge_cases_match_reference_in_float64(kind, reverse, steps, batch, input_size, hidden, lengths):
    args = _layer_args(kind, steps, batch, input_size, hidden, lengths, reverse)
    compare_with_reference(*_both(f"{kind}_layer"), args)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_full_rows_through_the_per_row_path_as_on_a_gpu(kind, reverse, monkeypatch):
    """On a GPU the layer does not ask whether every row is full (a host sync): full rows take the per-row path,
    which must give what torch.nn's plain path gives (here on the CPU, with the question answered no)."""
    from s2s_fast.aten import sequence

    monkeypatch.setattr(sequence, "_every_row_full", lambda lengths, steps: False)
    compare_with_reference(*_both(f"{kind}_layer"), _layer_args(kind, 6, 3, 3, 5, [6, 6, 6], reverse))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [(False, False), (True, False), (False, True)])
def test_layer_biases(kind, bias):
    args = _layer_args(kind, 4, 3, 2, 5, [4, 2, 0], True, bias=bias)
    compare_with_reference(*_both(f"{kind}_layer"), args)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_float32_and_non_contiguous(kind):
    args = _layer_args(kind, 9, 6, 8, 16, [9, 1, 4, 0, 9, 7], False, dtype=torch.float32)
    args["input"] = torch.randn(6, 9, 8).transpose(0, 1)  # time-major view of a batch-first tensor
    args["weight_ih"] = torch.randn(args["weight_ih"].shape[::-1]).t() / 8 ** 0.5
    compare_with_reference(*_both(f"{kind}_layer"), args)


def test_lengths_on_another_layout_and_dtype():
    """lengths of any integer dtype, and the same lengths for many calls, give the reference's results."""
    args = _layer_args("lstm", 5, 3, 2, 4, None, True)
    for lengths in (torch.tensor([5, 0, 2], dtype=torch.int32), torch.tensor([1, 1, 1], dtype=torch.int16)):
        compare_with_reference(*_both("lstm_layer"), {**args, "lengths": lengths})


def _layer_call(op):
    gates = 4 if op.startswith("lstm") else 3
    state = (torch.randn(2, 4),) * (2 if gates == 4 else 1)
    weights = (torch.randn(gates * 4, 3), torch.randn(gates * 4, 4), None, None)
    if op.endswith("cell"):
        return (torch.randn(2, 3), *state, *weights)
    extra = (None, False, None) if gates == 4 else (None, False)
    return (torch.randn(5, 2, 3), *state, *weights, *extra)


@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "lstm_layer", "gru_layer"])
def test_auto_prefers_aten_to_the_reference_on_cpu(op, monkeypatch):
    """Before the reference; the cpu backend's own layers come first (tests/test_cpu_backend.py), so it is left out
    here."""
    monkeypatch.setattr(backends, "_AUTO_FUSED", {"cpu": ("aten",)})
    assert backends.resolve(op, torch.device("cpu"), _layer_call(op))[0] == "aten"
    assert "aten" in s2s_fast.available_backends("cpu")


@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "lstm_layer", "gru_layer"])
def test_auto_takes_aten_on_a_gpu_only_where_cudnn_was_measured_faster(op, monkeypatch):
    """With the measured table empty auto never picks aten for CUDA tensors; a row covering the call puts it
    first, one that does not (dtype, batch or hidden size) leaves it out."""
    import types

    from s2s_fast import aten, reference

    refusing = types.SimpleNamespace(OPS={}, LIMITS={}, unavailable_reason=lambda d: None)
    modules = {"cuda": refusing, "triton": refusing, "aten": aten, "reference": reference}
    monkeypatch.setattr(backends, "_load", lambda name: (modules[name], None))
    cuda = torch.device("cuda")
    args = _layer_call(op)
    monkeypatch.setattr(backends, "CUDNN_FASTER", ())
    assert backends.resolve(op, cuda, args)[0] == "reference"
    for row, chosen in (((op, torch.float32, range(1, 9), range(1, 65)), "aten"),
                        ((op, torch.bfloat16, range(1, 9), range(1, 65)), "reference"),
                        ((op, torch.float32, range(3, 9), range(1, 65)), "reference"),
                        ((op, torch.float32, range(1, 9), range(5, 65)), "reference")):
        monkeypatch.setattr(backends, "CUDNN_FASTER", (row,))
        assert backends.resolve(op, cuda, args)[0] == chosen, row


def test_the_measured_table_names_the_cells_cudnn_ran_ahead_of_the_cuda_ones():
    """The rows the H200 run measured (bfloat16): torch's LSTM cell from B=16, its GRU cell from B=1, H=512-1024;
    no layer (the fused layers ran ahead everywhere) and no other dtype."""
    rows = {(op, dtype): (batches, hiddens) for op, dtype, batches, hiddens in backends.CUDNN_FASTER}
    assert set(rows) == {("lstm_cell", torch.bfloat16), ("gru_cell", torch.bfloat16)}
    assert 8 not in rows["lstm_cell", torch.bfloat16][0] and 16 in rows["lstm_cell", torch.bfloat16][0]
    assert 1 in rows["gru_cell", torch.bfloat16][0] and 1024 in rows["gru_cell", torch.bfloat16][1]


def test_aten_refuses_other_devices():
    from s2s_fast import aten

    assert aten.unavailable_reason(torch.device("cpu")) is None
    assert aten.unavailable_reason(torch.device("cuda")) is None
    assert "CPU and CUDA" in aten.unavailable_reason(torch.device("meta"))


def test_layers_are_left_to_the_reference_under_torch_compile(monkeypatch):
    from s2s_fast import aten

    args = _layer_call("lstm_layer")
    assert aten.LIMITS["lstm_layer"](*args) is None
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert "torch.compile" in aten.LIMITS["lstm_layer"](*args)
    assert "torch.compile" in aten.LIMITS["gru_layer"](*_layer_call("gru_layer"))
    # The cpu backend's layer (an opaque op with a fake) traces; without it, the reference.
    assert backends.resolve("lstm_layer", torch.device("cpu"), args)[0] in ("cpu", "reference")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_never_enters(kind, reverse):
    """Whatever the padded positions hold (NaN here), the outputs and final states are those of zero padding."""
    args = _layer_args(kind, 6, 4, 3, 5, [6, 0, 2, 4], reverse)
    padded = args["input"].clone()
    padded[torch.arange(6).unsqueeze(1) >= args["lengths"].unsqueeze(0)] = float("nan")
    expected = getattr(F, f"{kind}_layer")(**args, backend="reference")
    got = getattr(F, f"{kind}_layer")(**{**args, "input": padded}, backend="aten")
    for actual, wanted in zip(got, expected):
        torch.testing.assert_close(actual, wanted)


def test_lstm_cell_state_is_kept_exactly_through_padding_with_large_gates():
    """Gate pre-activations in the hundreds still leave the padding feature in charge: the final cell state is the
    one after each row's last valid step, to float64 tolerance."""
    args = _layer_args("lstm", 7, 5, 3, 4, [7, 1, 3, 0, 5], False)
    args["weight_ih"] = args["weight_ih"] * 300
    args["bias_hh"] = args["bias_hh"] * 300
    compare_with_reference(*_both("lstm_layer"), args)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("state", [float("nan"), float("inf"), 1e31])
def test_a_row_of_no_steps_keeps_whatever_state_it_was_given(kind, state):
    """Its state ran through the padded steps: an inf, NaN or huge (past the padding's saturation) h_0 changed its
    final cell state, silently; its state now passes through, and the other rows' results, and the weights' gradients,
    are those of a finite state (the reference's)."""
    args = _layer_args(kind, 5, 3, 3, 4, [5, 0, 2], False, dtype=torch.float32)
    args = {name: value.requires_grad_() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
            for name, value in args.items()}
    odd = args["hx"].detach().clone()
    odd[1, 0] = state
    got = getattr(F, f"{kind}_layer")(**{**args, "hx": odd}, backend="aten")
    finite = getattr(F, f"{kind}_layer")(**args, backend="reference")
    torch.testing.assert_close(got[0], finite[0])
    for row in (0, 2):
        for actual, wanted in zip(got[1:], finite[1:]):
            torch.testing.assert_close(actual[row], wanted[row])
    torch.testing.assert_close(got[1][1], odd[1], equal_nan=True)
    if kind == "lstm":
        torch.testing.assert_close(got[2][1], args["cx"][1])
    weights = [args[name] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    got_grads = torch.autograd.grad(got[0].sum() + got[2 if kind == "lstm" else 1][::2].sum(), weights)
    wanted_grads = torch.autograd.grad(finite[0].sum() + finite[2 if kind == "lstm" else 1][::2].sum(), weights)
    for actual, wanted in zip(got_grads, wanted_grads):
        torch.testing.assert_close(actual, wanted)
