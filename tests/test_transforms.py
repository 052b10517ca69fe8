"""torch.func's transforms, forward-mode AD and TorchScript around the ops and drop-in modules.

The fused backends' ops have autograd's backward alone: under torch.func.jvp the cpu layers gave a zero tangent,
silently, and under torch.func.grad torch refused them with an error about autograd.Function. Auto now passes over
them under those transforms (explicitly named, they refuse in words); torch's RNN ops (aten) likewise under vmap.
TorchScript is refused in words. See s2s_fast.transforms and s2s_fast.backends.BACKWARD_ONLY.
"""

import functools

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

from s2s_fast import backends, transforms
from s2s_fast import functional as F
from s2s_fast import nn as snn

F64 = torch.float64


def _modules_and_inputs():
    """name -> (function of one tensor, that tensor, the backend auto picks for it outside any transform, or None
    where that depends on the machine), float64 unless said."""
    torch.manual_seed(0)
    T, B, I, H, S, A = 5, 3, 4, 6, 4, 5
    lstm = snn.LSTM(I, H, num_layers=2, bidirectional=True).to(F64)
    gru = snn.GRU(I, H).to(F64)
    gru_reference = snn.GRU(I, H, backend="reference").to(F64)  # its padding zeroed by functional's autograd.Function
    cell = snn.LSTMCell(I, H).to(F64)
    gru_cell = snn.GRUCell(I, H).to(F64)
    attention = snn.AdditiveAttention(query_size=H, key_size=7, attn_size=A).to(F64)
    memory, mask = torch.randn(B, S, 7, dtype=F64), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]).bool()
    lengths = torch.tensor([5, 3, 1])
    decoder = [torch.randn(*shape, dtype=F64) * 0.5 for shape in
               ((B, H), (B, H), (B, H), (4 * H, I + H), (4 * H, H), (4 * H,), (4 * H,), (A, H), (B, S, A), (A,),
                (B, S, 7), (H, H + 7))]
    return {
        "LSTM": (lambda x: lstm(x)[0], torch.randn(T, B, I, dtype=F64), None),
        "GRU": (lambda x: gru(x)[0], torch.randn(T, B, I, dtype=F64), "cpu"),
        "GRU padded": (lambda x: gru.forward_padded(x, lengths)[0], torch.randn(T, B, I, dtype=F64), "cpu"),
        "GRU padded, reference": (lambda x: gru_reference.forward_padded(x, lengths)[0],
                                  torch.randn(T, B, I, dtype=F64), "reference"),
        "LSTMCell": (lambda x: cell(x)[0], torch.randn(B, I, dtype=F64), None),
        "GRUCell": (lambda x: gru_cell(x), torch.randn(B, I, dtype=F64), None),
        "AdditiveAttention": (lambda q: attention(q, memory, mask=mask)[0], torch.randn(B, H, dtype=F64), "cpu"),
        "lstm_attention_decoder": (
            lambda x: F.lstm_attention_decoder(x, *decoder[:8], decoder[8], decoder[9], decoder[10], mask,
                                               decoder[11])[0], torch.randn(T, B, I, dtype=F64), "cpu"),
    }


CASES = list(_modules_and_inputs())


def _case(name):
    return _modules_and_inputs()[name]


def _finite_difference(function, x, direction, eps=1e-6):
    return (function(x + eps * direction) - function(x - eps * direction)) / (2 * eps)


def test_active_names_each_transform_and_nothing_outside_them():
    seen = {}

    def probe(name, x):
        seen[name] = transforms.active((x,))
        return x.sin()

    x = torch.randn(3)
    assert transforms.active((x,)) is transforms.NONE
    torch.func.jvp(functools.partial(probe, "jvp"), (x,), (x,))
    torch.func.grad(lambda z: probe("grad", z).sum())(x)
    torch.func.vmap(functools.partial(probe, "vmap"))(x.view(3, 1))
    torch.func.vmap(lambda z: torch.func.grad(lambda w: probe("vmap grad", w).sum())(z))(x.view(3, 1))
    with forward_ad.dual_level():
        probe("dual", forward_ad.make_dual(x, x))
        probe("not dual", x)
    assert seen == {"jvp": {"jvp"}, "grad": {"grad"}, "vmap": {"vmap"}, "vmap grad": {"vmap", "grad"},
                    "dual": {"jvp"}, "not dual": set()}


@pytest.mark.parametrize("name", CASES)
def test_forward_mode_derivatives_under_auto_are_right(name):
    function, x, chosen = _case(name)
    if chosen == "cpu" and "cpu" not in backends.available_backends("cpu"):
        pytest.skip("the cpu backend's kernels are not built here")
    direction = torch.randn_like(x)
    expected = _finite_difference(function, x, direction)
    _, tangent = torch.func.jvp(function, (x,), (direction,))
    torch.testing.assert_close(tangent, expected, rtol=1e-6, atol=1e-8)
    with forward_ad.dual_level():
        dual_tangent = forward_ad.unpack_dual(function(forward_ad.make_dual(x, direction))).tangent
    torch.testing.assert_close(dual_tangent, expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(torch.func.jacfwd(function)(x), torch.func.jacrev(function)(x), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_torch_func_grad_under_auto_matches_autograd(name):
    function, x, _ = _case(name)
    weights = torch.randn_like(function(x))
    gradient = torch.func.grad(lambda z: (function(z) * weights).sum())(x)
    leaf = x.clone().requires_grad_()
    expected, = torch.autograd.grad((function(leaf) * weights).sum(), leaf)
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["GRU", "AdditiveAttention"])
def test_a_compiled_function_inside_a_transform_takes_its_derivatives_past_the_cpu_backend(name):
    """torch.func.jvp(torch.compile(f)) gave a zero tangent, silently, and torch.func.grad(torch.compile(f)) failed
    in Dynamo's fake-tensor run: the trace asked no transform question and kept the cpu backend's ops."""
    function, x, _ = _case(name)
    if "cpu" not in backends.available_backends("cpu"):
        pytest.skip("the cpu backend's kernels are not built here")
    # A function compiled afresh for each transform: Dynamo's recompilation for a second transform fails in its
    # fake-tensor run (AssertionError: False != True), on the reference too.
    torch._dynamo.reset()
    direction = torch.randn_like(x)
    _, tangent = torch.func.jvp(torch.compile(function, backend="eager"), (x,), (direction,))
    torch.testing.assert_close(tangent, _finite_difference(function, x, direction), rtol=1e-6, atol=1e-8)
    torch._dynamo.reset()
    weights = torch.randn_like(function(x))
    compiled = torch.compile(function, backend="eager")
    gradient = torch.func.grad(lambda z: (compiled(z) * weights).sum())(x)
    torch.testing.assert_close(gradient, torch.func.grad(lambda z: (function(z) * weights).sum())(x))
    torch._dynamo.reset()


def test_a_float32_lstm_takes_forward_mode_derivatives_past_onednns_layer():
    """torch's CPU LSTM layer below float64 is oneDNN's (mkldnn_rnn_layer), which has no forward derivative: auto
    chose it under torch.func.jvp (the cpu backend passed over) and torch raised."""
    torch.manual_seed(0)
    lstm, x = snn.LSTM(4, 6), torch.randn(5, 3, 4)
    direction = torch.randn_like(x)
    _, tangent = torch.func.jvp(lambda z: lstm(z)[0], (x,), (direction,))
    reference = snn.LSTM(4, 6, backend="reference")
    reference.load_state_dict(lstm.state_dict())
    _, expected = torch.func.jvp(lambda z: reference(z)[0], (x,), (direction,))
    torch.testing.assert_close(tangent, expected)
    aten = snn.LSTM(4, 6, backend="aten")
    with pytest.raises(backends.BackendError, match="oneDNN's, which has no forward-mode derivative"):
        torch.func.jvp(lambda z: aten(z)[0], (x,), (direction,))


def test_auto_serves_the_cpu_backend_outside_transforms_for_the_cases_that_say_so():
    """What makes the two tests above bite: outside a transform these calls go to the cpu backend."""
    if "cpu" not in backends.available_backends("cpu"):
        pytest.skip("the cpu backend's kernels are not built here")
    x = torch.randn(5, 3, 4, dtype=F64, requires_grad=True)
    args = (x, torch.zeros(3, 6, dtype=F64), torch.randn(18, 4, dtype=F64), torch.randn(18, 6, dtype=F64), None,
            None, None, False)
    assert backends.resolve("gru_layer", x.device, args)[0] == "cpu"
    with forward_ad.dual_level():
        dual_args = (forward_ad.make_dual(x.detach(), torch.ones_like(x)),) + args[1:]
        assert backends.resolve("gru_layer", x.device, dual_args)[0] == "aten"


@pytest.mark.parametrize("backend", sorted(backends.BACKWARD_ONLY))
def test_a_backward_only_backend_named_under_a_derivative_transform_refuses_in_words(backend):
    if backends.unavailable_reason(backend, "cpu") is not None:
        pytest.skip(f"the {backend} backend does not run on CPU tensors here")
    query, key, v, values = torch.randn(2, 1, 4), torch.randn(2, 3, 4), torch.randn(4), torch.randn(2, 3, 5)

    def attention(q):
        return F.additive_attention(q, key, v, values, backend=backend)[0]

    for transform in (lambda: torch.func.jvp(attention, (query,), (query,)),
                      lambda: torch.func.grad(lambda q: attention(q).sum())(query)):
        with pytest.raises(backends.BackendError, match="forward-mode derivative.*the reference serves"):
            transform()
    with forward_ad.dual_level(), pytest.raises(backends.BackendError, match="torch.autograd.forward_ad"):
        attention(forward_ad.make_dual(query, query))


def test_vmap_passes_over_torchs_rnn_ops_and_runs_the_padded_reference():
    torch.manual_seed(0)
    lstm = snn.LSTM(4, 6)
    inputs = torch.randn(3, 5, 2, 4)  # vmapped over the first dimension
    with torch.no_grad():  # auto prefers aten for the LSTM layer's inference
        assert backends.resolve("lstm_layer", inputs.device, (inputs[0], torch.zeros(2, 6), torch.zeros(2, 6),
                                                              lstm.weight_ih_l0, lstm.weight_hh_l0, None, None,
                                                              None, False, None))[0] == "aten"
        batched = torch.func.vmap(lambda x: lstm(x)[0])(inputs)
        torch.testing.assert_close(batched, torch.stack([lstm(x)[0] for x in inputs]))
    aten = snn.LSTM(4, 6, backend="aten")
    with pytest.raises(backends.BackendError, match="vmap has no batching rule"):
        torch.func.vmap(lambda x: aten(x)[0])(inputs)
    lengths = torch.tensor([5, 2])
    padded = snn.GRU(4, 6, backend="reference")
    batched = torch.func.vmap(lambda x: padded.forward_padded(x, lengths)[0])(inputs)
    torch.testing.assert_close(batched, torch.stack([padded.forward_padded(x, lengths)[0] for x in inputs]))


def test_a_bfloat16_cell_loop_takes_forward_mode_derivatives():
    """The reference time loop's float32 gradient carriers (autograd.Functions) step aside under forward-mode AD."""
    from s2s_fast import reference

    torch.manual_seed(0)
    layer = functools.partial(reference.OPS["lstm_layer"], cell=reference.OPS["lstm_cell"])
    x, state = torch.randn(4, 2, 3, dtype=torch.bfloat16), torch.zeros(2, 5, dtype=torch.bfloat16)
    weight_ih = torch.randn(20, 3, dtype=torch.bfloat16, requires_grad=True)
    weight_hh = torch.randn(20, 5, dtype=torch.bfloat16, requires_grad=True)
    direction = torch.randn_like(weight_ih)
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(weight_ih, direction)
        tangent = forward_ad.unpack_dual(layer(x, state, state, dual, weight_hh)[0]).tangent
    x32, state32, ih32, hh32 = (t.detach().float() for t in (x, state, weight_ih, weight_hh))
    _, expected = torch.func.jvp(lambda w: reference.OPS["lstm_layer"](x32, state32, state32, w, hh32)[0], (ih32,),
                                 (direction.float(),))
    torch.testing.assert_close(tangent.float(), expected, rtol=0.1, atol=0.1)


def _drop_ins():
    return [snn.LSTM(4, 6), snn.GRU(4, 6), snn.LSTMCell(4, 6), snn.GRUCell(4, 6), snn.Linear(4, 6), snn.Dropout(0.1),
            snn.AdditiveAttention(query_size=6, key_size=6, attn_size=5), snn.LuongAttention(6, 6)]


@pytest.mark.parametrize("module", _drop_ins(), ids=lambda m: type(m).__name__)
def test_torchscript_is_refused_in_words(module):
    name = type(module).__name__
    for target in (module, torch.nn.Sequential(torch.nn.Identity(), module)):
        with pytest.raises(NotImplementedError, match=f"torch.jit.script cannot compile s2s_fast.nn.{name}"):
            torch.jit.script(target)


@pytest.mark.parametrize("module, op", [(snn.LSTM(4, 6, backend="reference"), "lstm_layer"),
                                        (snn.GRU(4, 6), "gru_layer"), (snn.LSTMCell(4, 6), "lstm_cell"),
                                        (snn.Linear(4, 6), "linear")], ids=["LSTM", "GRU", "LSTMCell", "Linear"])
def test_jit_trace_is_refused_in_words(module, op):
    x = torch.randn(5, 2, 4) if op.endswith("layer") else torch.randn(2, 4)
    with pytest.raises(NotImplementedError, match=f"functional.{op}: torch.jit.trace cannot record"):
        torch.jit.trace(module, (x,))
