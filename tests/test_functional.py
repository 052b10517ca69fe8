"""Functional API: dispatch to the reference on CPU, and clear errors for bad input."""

import pytest
import torch

from s2s_fast import functional as F
from s2s_fast import nn as snn
from s2s_fast import reference


def _lstm_args(batch=2, input_size=3, hidden=4, dtype=torch.float32):
    return dict(input=torch.randn(batch, input_size, dtype=dtype), hx=torch.randn(batch, hidden, dtype=dtype),
                cx=torch.randn(batch, hidden, dtype=dtype), weight_ih=torch.randn(4 * hidden, input_size, dtype=dtype),
                weight_hh=torch.randn(4 * hidden, hidden, dtype=dtype), bias_ih=torch.randn(4 * hidden, dtype=dtype),
                bias_hh=torch.randn(4 * hidden, dtype=dtype))


def _attention_args(queries=None, batch=2, keys=5, attn=4, dv=3):
    query_shape = (batch, attn) if queries is None else (batch, queries, attn)
    return dict(query_proj=torch.randn(query_shape), key_proj=torch.randn(batch, keys, attn), v=torch.randn(attn),
                values=torch.randn(batch, keys, dv), mask=torch.ones(batch, keys, dtype=torch.bool))


def test_functional_matches_reference():
    args = _lstm_args()
    hy, cy = F.lstm_cell(**args)
    ref = reference.lstm_cell(*args.values())
    torch.testing.assert_close(hy, ref[0])
    torch.testing.assert_close(cy, ref[1])
    attention = _attention_args(queries=3)
    context, weights = F.additive_attention(**attention)
    torch.testing.assert_close(context, reference.additive_attention(*attention.values())[0])


@pytest.mark.parametrize("change,error,pattern", [
    (dict(hx=torch.randn(3, 4)), ValueError, r"hx must have shape .*\[2, 4\].*got \[3, 4\]"),
    (dict(cx=torch.randn(2, 5)), ValueError, r"cx must have shape"),
    (dict(weight_ih=torch.randn(16, 5)), ValueError, r"weight_ih must have shape"),
    (dict(weight_hh=torch.randn(15, 4)), ValueError, r"weight_hh must have shape"),
    (dict(bias_ih=torch.randn(15)), ValueError, r"bias_ih must have shape"),
    (dict(input=torch.randn(3)), ValueError, r"input must be \[B, I\]"),
    (dict(hx=torch.randn(2, 4, dtype=torch.float64)), TypeError, r"hx has dtype torch.float64"),
    (dict(input=torch.ones(2, 3, dtype=torch.int64)), TypeError, r"input must be float16, bfloat16"),
    (dict(cx=None), TypeError, r"cx must be a tensor"),
    (dict(hx=[1.0]), TypeError, r"hx must be a tensor"),
])
def test_lstm_cell_bad_input(change, error, pattern):
    args = {**_lstm_args(), **change}
    with pytest.raises(error, match=pattern):
        F.lstm_cell(**args)


def _cell_args(op, projected=False):
    """Valid arguments of a cell call: B=2, I=3, H=4 (P=3 with a projection)."""
    gates, batch, input_size, hidden = (4 if op == "lstm_cell" else 3), 2, 3, 4
    output = 3 if projected else hidden
    args = dict(input=torch.randn(batch, input_size), hx=torch.randn(batch, output),
                cx=torch.randn(batch, hidden), weight_ih=torch.randn(gates * hidden, input_size),
                weight_hh=torch.randn(gates * hidden, output), bias_ih=torch.randn(gates * hidden),
                bias_hh=torch.randn(gates * hidden))
    if op == "gru_cell":
        del args["cx"]
    if projected:
        args["weight_hr"] = torch.randn(output, hidden)
    return args


@pytest.mark.parametrize("op,projected", [("lstm_cell", False), ("gru_cell", False), ("lstm_cell", True)])
def test_every_wrong_size_of_a_cell_names_its_argument(op, projected):
    """Each size of each argument one too large, alone: the call raises naming that argument (the check's quick
    accept must not let any of them through)."""
    check = (lambda **a: F._check_cell(op, 4 if op == "lstm_cell" else 3, **a)) if projected else getattr(F, op)
    valid = _cell_args(op, projected)
    check(**valid)
    for name, tensor in valid.items():
        if name in ("input", "weight_hr"):
            continue  # their sizes define B, I, H and P
        for dim in range(tensor.dim()):
            shape = list(tensor.shape)
            shape[dim] += 1
            with pytest.raises(ValueError, match=f"{name} must have shape"):
                check(**{**valid, name: torch.randn(shape)})


def test_gru_cell_bad_input():
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \[3H, H\]"):
        F.gru_cell(x, h, torch.randn(12, 3), torch.randn(16, 4))
    with pytest.raises(ValueError, match=r"weight_ih must have shape"):
        F.gru_cell(x, h, torch.randn(12, 2), torch.randn(12, 4))


@pytest.mark.parametrize("change,error,pattern", [
    (dict(mask=torch.ones(2, 5, dtype=torch.int64)), TypeError, "mask must be a bool tensor"),
    (dict(mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, r"mask must have shape \[B, Tk\] = \[2, 5\]"),
    (dict(v=torch.randn(5)), ValueError, r"v must have shape \[A\]"),
    (dict(values=torch.randn(2, 6, 3)), ValueError, "values must have shape"),
    (dict(query_proj=torch.randn(2, 3)), ValueError, "query_proj must have shape"),
    (dict(query_proj=torch.randn(2, 1, 1, 4)), ValueError, "query_proj must be"),
    (dict(key_proj=torch.randn(2, 5, 4, dtype=torch.float64)), TypeError, "key_proj has dtype"),
])
def test_attention_bad_input(change, error, pattern):
    args = {**_attention_args(), **change}
    with pytest.raises(error, match=pattern):
        F.additive_attention(**args)


def test_dot_attention_bad_input():
    with pytest.raises(ValueError, match="query must have shape"):
        F.dot_attention(torch.randn(2, 3), torch.randn(2, 5, 4), torch.randn(2, 5, 3))


def test_layer_lengths():
    x, h, c = torch.randn(4, 3, 2), torch.randn(3, 5), torch.randn(3, 5)
    w_ih, w_hh = torch.randn(20, 2), torch.randn(20, 5)
    out, hy, cy = F.lstm_layer(x, h, c, w_ih, w_hh, lengths=torch.tensor([4, 0, 2]))
    # A row of length 0 keeps its initial state and outputs zeros; past its end a row outputs zeros.
    torch.testing.assert_close(hy[1], h[1])
    torch.testing.assert_close(cy[1], c[1])
    assert torch.count_nonzero(out[:, 1]) == 0 and torch.count_nonzero(out[2:, 2]) == 0
    full, h_full, _ = F.lstm_layer(x[:2, 2:], h[2:], c[2:], w_ih, w_hh)
    torch.testing.assert_close(out[:2, 2:], full)
    torch.testing.assert_close(hy[2:], h_full)
    for bad, error, pattern in ((torch.tensor([5, 1, 1]), ValueError, r"lengths must lie in \[0, T\]"),
                                (torch.tensor([1.0, 1.0, 1.0]), TypeError, "integer"),
                                (torch.tensor([1, 1]), ValueError, r"lengths must have shape \[B\]"),
                                (torch.tensor([4, 0, 2], device="meta"), ValueError, "meta device.*inputs are on cpu"),
                                (torch.tensor([5, 0, 2], dtype=torch.uint32), ValueError, r"lie in \[0, T\]")):
        with pytest.raises(error, match=pattern):
            F.lstm_layer(x, h, c, w_ih, w_hh, lengths=bad)
    for unsigned in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):  # torch's min had no kernel for the wide
        got = F.lstm_layer(x, h, c, w_ih, w_hh, lengths=torch.tensor([4, 0, 2], dtype=unsigned))
        for actual, wanted in zip(got, (out, hy, cy)):
            torch.testing.assert_close(actual, wanted)
    with pytest.raises(ValueError, match=r"\[T, B, I\]"):
        F.lstm_layer(x[0], h, c, w_ih, w_hh)
    with pytest.raises(TypeError, match="reverse"):
        F.lstm_layer(x, h, c, w_ih, w_hh, reverse=1)


def test_empty_sizes_follow_torch():
    out, hy, cy = F.lstm_layer(torch.randn(0, 2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.randn(16, 3),
                               torch.randn(16, 4))
    assert out.shape == (0, 2, 4)
    context, weights = F.additive_attention(torch.randn(0, 4), torch.randn(0, 5, 4), torch.randn(4),
                                            torch.randn(0, 5, 3))
    assert context.shape == (0, 3) and weights.shape == (0, 5)


def test_autocast_casts_inputs_as_torch_does():
    """float32 inputs are cast to the autocast dtype where torch's autocast casts the op's torch counterpart (on a
    CPU: not the cells or the GRU layer); float64 ones stay float64, as torch's autocast leaves them (then, mixed with
    float32 ones, they are refused as torch refuses them)."""
    args = _lstm_args()
    double = {name: value.double() for name, value in args.items()}
    gru = {name: args[name] for name in ("input", "hx")}
    gru.update(weight_ih=torch.randn(12, args["input"].shape[1]), weight_hh=torch.randn(12, 4))
    steps = args["input"].unsqueeze(0).expand(3, -1, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hy, cy = F.lstm_cell(**args)
        theirs = torch.nn.LSTMCell(args["input"].shape[1], 4)(args["input"])[0]
        gru_hy = F.gru_cell(**gru)
        gru_output, _ = F.gru_layer(steps, gru["hx"], gru["weight_ih"], gru["weight_hh"])
        gru_theirs = torch.nn.GRU(args["input"].shape[1], 4)(steps)[0]
        lstm_output, _, _ = F.lstm_layer(steps, args["hx"], args["cx"], args["weight_ih"], args["weight_hh"],
                                         backend="reference")
        context, _ = F.additive_attention(**_attention_args())
        projected = F.linear(args["input"], torch.randn(5, args["input"].shape[1]))
        hy64, _ = F.lstm_cell(**double)
        expected = torch.lstm_cell(double["input"], (double["hx"], double["cx"]), double["weight_ih"],
                                   double["weight_hh"], double["bias_ih"], double["bias_hh"])[0]
        with pytest.raises(RuntimeError, match="dtype"):
            F.additive_attention(**{**_attention_args(), "v": torch.randn(4, dtype=torch.float64)})
    assert hy.dtype == cy.dtype == theirs.dtype == torch.float32
    assert gru_hy.dtype == gru_output.dtype == gru_theirs.dtype == torch.float32
    # torch.nn.LSTM and Linear run in bfloat16 under CPU autocast (oneDNN's bfloat16 LSTM needs AVX-512: not asked).
    assert lstm_output.dtype == context.dtype == projected.dtype == torch.bfloat16
    assert hy64.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(hy64, expected)


def test_meta_tensors_give_shapes_like_torch():
    """Every op, and the drop-in modules, run on the meta device (shapes without data), as torch.nn's do."""
    meta = {name: value.to("meta") for name, value in _lstm_args().items()}
    hy, cy = F.lstm_cell(**meta)
    assert hy.is_meta and hy.shape == _lstm_args()["hx"].shape
    attention = {name: value.to("meta") if isinstance(value, torch.Tensor) else value
                 for name, value in _attention_args().items()}
    context, weights = F.additive_attention(**attention)
    assert context.is_meta and weights.is_meta
    lengths = torch.tensor([3, 1], device="meta")
    output, h, c = F.lstm_layer(torch.empty(3, 2, 5, device="meta"), *(torch.empty(2, 4, device="meta"),) * 2,
                                torch.empty(16, 5, device="meta"), torch.empty(16, 4, device="meta"), lengths=lengths)
    assert output.shape == (3, 2, 4) and h.is_meta
    for ours, theirs in ((snn.LSTM, torch.nn.LSTM), (snn.GRU, torch.nn.GRU)):
        x = torch.empty(6, 2, 3, device="meta")
        got, expected = ours(3, 4, 2, bidirectional=True, device="meta")(x), theirs(3, 4, 2, bidirectional=True,
                                                                                  device="meta")(x)
        assert got[0].shape == expected[0].shape and got[0].is_meta


@pytest.mark.gpu
def test_gpu_lengths_for_cpu_inputs_are_checked_on_the_host():
    """Lengths on a GPU for a call on CPU tensors go to the host, which the CPU kernels read them on, and are
    checked there: a clear error, not a device-side assert that would leave the CUDA context unusable."""
    x, h, c = torch.randn(4, 3, 5), torch.randn(3, 8), torch.randn(3, 8)
    w_ih, w_hh = torch.randn(32, 5), torch.randn(32, 8)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T\] = \[0, 4\], got min 0 and max 9"):
        F.lstm_layer(x, h, c, w_ih, w_hh, lengths=torch.tensor([4, 0, 9], device="cuda"))
    output, _, _ = F.lstm_layer(x, h, c, w_ih, w_hh, lengths=torch.tensor([4, 0, 2], device="cuda"))
    assert output.device.type == "cpu" and torch.count_nonzero(output[:, 1]) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_lengths_are_checked_on_the_gpu_without_a_host_sync(backend):
    """A layer call with lengths on the GPU synchronises nothing (so it can be captured in a CUDA graph). (A length
    out of range then fails a device-side assert with the range in its message; that leaves the CUDA context
    unusable, so it is not exercised here.)"""
    from s2s_fast import backends

    if backends.unavailable_reason(backend, torch.device("cuda")) is not None:
        pytest.skip(f"{backend} unavailable")
    x, h, c = torch.randn(4, 3, 5, device="cuda"), torch.randn(3, 8, device="cuda"), torch.randn(3, 8, device="cuda")
    w_ih, w_hh = torch.randn(32, 5, device="cuda"), torch.randn(32, 8, device="cuda")
    lengths = torch.tensor([4, 0, 2], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        F.lstm_layer(x, h, c, w_ih, w_hh, lengths=lengths, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")
