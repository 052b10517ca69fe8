"""LSTM projections (torch.nn.LSTM's proj_size > 0): functional.lstm_layer's weight_hr on the reference and aten
backends, the fallback and errors elsewhere, and every ModuleInfo sample of torch's own RNN modules run through
s2s_fast's drop-in modules against torch."""

import pytest
import torch

import s2s_fast.nn as snn
from s2s_fast import backends
from s2s_fast import functional as F
from s2s_fast.testing import compare_with_reference, tolerance


def _projected_args(steps=5, batch=4, input_size=3, hidden=6, proj=4, lengths=None, reverse=False,
                    dtype=torch.float64):
    t = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    return dict(input=t(steps, batch, input_size), hx=t(batch, proj), cx=t(batch, hidden),
                weight_ih=t(4 * hidden, input_size), weight_hh=t(4 * hidden, proj), bias_ih=t(4 * hidden),
                bias_hh=t(4 * hidden), lengths=lengths, reverse=reverse, weight_hr=t(proj, hidden))


def test_reference_projection_matches_torch():
    args = _projected_args()
    module = torch.nn.LSTM(3, 6, proj_size=4).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
            getattr(module, f"{name}_l0").copy_(args[name])
    expected, (h, c) = module(args["input"], (args["hx"].unsqueeze(0), args["cx"].unsqueeze(0)))
    output, hy, cy = F.lstm_layer(**args, backend="reference")
    for actual, wanted in ((output, expected), (hy, h[0]), (cy, c[0])):
        torch.testing.assert_close(actual, wanted, **tolerance(torch.float64))


def test_reference_projection_gradcheck():
    args = _projected_args(steps=3, batch=2, input_size=2, hidden=3, proj=2, lengths=torch.tensor([3, 1]))
    names = [name for name, value in args.items() if isinstance(value, torch.Tensor) and value.is_floating_point()]

    def run(*tensors):
        return F.lstm_layer(**{**args, **dict(zip(names, tensors))}, backend="reference")

    assert torch.autograd.gradcheck(run, [args[name].requires_grad_(True) for name in names])


@pytest.mark.parametrize("lengths", [None, [5, 0, 3, 5], [2, 1, 5, 1]])
@pytest.mark.parametrize("reverse", [False, True])
def test_aten_projection_matches_reference(lengths, reverse):
    args = _projected_args(lengths=None if lengths is None else torch.tensor(lengths), reverse=reverse)
    compare_with_reference(lambda **a: F.lstm_layer(**a, backend="aten"),
                           lambda **a: F.lstm_layer(**a, backend="reference"), args)


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_fused_layers_refuse_projection_and_auto_falls_back(name, monkeypatch):
    """A backend without projections says so when asked by name; auto passes it by."""
    module = backends._load(name)[0]
    args = tuple(_projected_args(dtype=torch.float32).values())
    assert "projection" in module.LIMITS["lstm_layer"](*args)
    with pytest.raises(ValueError, match="projection"):
        module.OPS["lstm_layer"](*args)
    monkeypatch.setattr(backends, "_AUTO_FUSED", {"cpu": (name,)})
    monkeypatch.setattr(backends, "_unavailable", lambda *a: None)
    assert backends.resolve("lstm_layer", torch.device("cpu"), args)[0] == "reference"
    with pytest.raises(RuntimeError, match=f"backend '{name}' cannot serve lstm_layer.*projection"):
        backends.resolve("lstm_layer", torch.device("cpu"), args, backend=name)


def test_cell_loop_refuses_projection(monkeypatch):
    """A backend serving the layer through its cell in the time loop cannot run a projected LSTM."""
    import types

    from s2s_fast import reference

    fake = types.SimpleNamespace(OPS={"lstm_cell": reference.lstm_cell}, LIMITS={}, unavailable_reason=lambda d: None)
    monkeypatch.setattr(backends, "_load", lambda name: (fake, None) if name == "triton" else (reference, None))
    with pytest.raises(RuntimeError, match="cannot run a projected LSTM"):
        F.lstm_layer(**_projected_args(dtype=torch.float32), backend="triton")


@pytest.mark.parametrize("change, message", [
    (dict(weight_hr=torch.randn(6, 6)), "0 < P < H"),
    (dict(hx=torch.randn(4, 6)), r"hx must have shape \[B, P\]"),
    (dict(weight_hh=torch.randn(24, 6)), r"weight_hh must have shape \[4H, P\]"),
    (dict(weight_hr=torch.randn(4)), r"weight_hr must be \[P, H\]"),
])
def test_projection_bad_shapes(change, message):
    args = {**_projected_args(dtype=torch.float32), **change}
    with pytest.raises(ValueError, match=message):
        F.lstm_layer(**args, backend="reference")


def _module_samples():
    """(module class, ModuleInfo sample, training) for every sample of torch's LSTM, GRU, LSTMCell and GRUCell."""
    common_modules = pytest.importorskip("torch.testing._internal.common_modules")
    samples = []
    for info in common_modules.module_db:
        if info.module_cls not in (torch.nn.LSTM, torch.nn.GRU, torch.nn.LSTMCell, torch.nn.GRUCell):
            continue
        for training in (True, False):
            for sample in info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=True,
                                                  training=training):
                samples.append((info.module_cls, sample, training))
    return samples


_DROP_IN = {torch.nn.LSTM: snn.LSTM, torch.nn.GRU: snn.GRU, torch.nn.LSTMCell: snn.LSTMCell,
            torch.nn.GRUCell: snn.GRUCell}


def _leaves(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value] if value.requires_grad else []
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    return []


def _flat(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flat(item)]


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(item) for item in value)
    return value


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_module_db_samples_match_torch(backend):
    """Every ModuleInfo sample of torch's RNN modules (proj_size samples included): the same outputs and the same
    gradients of inputs, states and parameters as torch's module."""
    samples = _module_samples()
    assert len(samples) >= 100
    for module_cls, sample, training in samples:
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        theirs = module_cls(*args, **kwargs).double().train(training)
        ours = _DROP_IN[module_cls](*args, **kwargs, backend=backend).double().train(training)
        ours.load_state_dict(theirs.state_dict())
        runs = []
        for module in (theirs, ours):
            inputs = _clone(sample.forward_input.args)
            outputs = _flat(module(*inputs, **sample.forward_input.kwargs))
            runs.append((outputs, _leaves(inputs) + list(module.parameters())))
        (expected, their_leaves), (actual, our_leaves) = runs
        what = f"{module_cls.__name__}({args}, {kwargs}), inputs {[getattr(a, 'shape', a) for a in _flat(sample.forward_input.args)]}"
        assert len(actual) == len(expected), what
        generator = torch.Generator().manual_seed(0)
        upstream = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in expected]
        for outputs, leaves in runs:
            grads = torch.autograd.grad(outputs, leaves, upstream, allow_unused=True)
            outputs.extend(torch.zeros_like(leaf) if grad is None else grad for leaf, grad in zip(leaves, grads))
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, **tolerance(torch.float64), msg=lambda m: f"{what}: {m}")
