"""Second-order gradients (create_graph=True, then a gradient of the gradients: a gradient penalty) of every op on
every backend that implements it, against the reference's. The fused kernels' backward is not differentiable: under
create_graph the cpu, triton and cuda backends take their gradients through the reference's composition of the op
(s2s_fast.reference.gradients), where they refused (cpu) or failed inside torch (triton, cuda). aten's ops are torch's
own."""

import pytest
import torch
from inputs import attention_inputs, on, rnn_inputs
from test_attention_decoder import decoder_inputs

from s2s_fast import functional as F

OPS = ["lstm_cell", "gru_cell", "lstm_layer", "gru_layer", "additive_attention", "lstm_attention_decoder",
       "gru_attention_decoder"]


def _inputs(op: str) -> dict:
    torch.manual_seed(0)
    if op.endswith("_cell"):
        return rnn_inputs(op, 3, 4, 5)
    if op.endswith("_layer"):
        args = rnn_inputs(op, 3, 4, 5, steps=4)
        return dict(args, lengths=torch.tensor([4, 2, 3]), reverse=True)
    if op == "additive_attention":
        return attention_inputs(3, 2, 5, 4, 3)
    return decoder_inputs(op, steps=3, batch=2, dtype=torch.float32)


def _penalty(op: str, args: dict, backend: str):
    """(the first gradients, with their graph, and the gradients of their squared sum) of a weighted sum of the
    op's floating outputs, against every floating input."""
    leaves = {name: value.detach().clone().requires_grad_() for name, value in args.items()
              if isinstance(value, torch.Tensor) and value.is_floating_point()}
    outputs = getattr(F, op)(**{**args, **leaves}, backend=backend)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    generator = torch.Generator().manual_seed(1)
    loss = sum((output * torch.randn(output.shape, generator=generator, dtype=output.dtype).to(output.device)).sum()
               for output in outputs)
    first = torch.autograd.grad(loss, list(leaves.values()), create_graph=True, allow_unused=True)
    penalty = sum(grad.square().sum() for grad in first if grad is not None)
    second = torch.autograd.grad(penalty, list(leaves.values()), allow_unused=True)
    return dict(zip(leaves, first)), dict(zip(leaves, second))


@pytest.mark.parametrize("op", OPS)
def test_second_order_gradients_match_the_reference(backend, op):
    if backend.name == "aten" and backend.device.type == "cuda" and op.endswith("_layer"):
        pytest.skip("aten's layers on a GPU are cuDNN's, which has no double backward (nor has torch.nn.LSTM there)")
    dtype = torch.float64 if backend.name in ("cpu", "aten") else torch.float32
    args = on(_inputs(op), backend.device, dtype)
    backend.skip_unless_served(op, args, dtype)
    got, expected = _penalty(op, args, backend.name), _penalty(op, args, "reference")
    for order, (got_grads, expected_grads) in enumerate(zip(got, expected), start=1):
        for name, value in expected_grads.items():
            if value is None:
                assert got_grads[name] is None or not got_grads[name].any(), (order, name)
                continue
            assert got_grads[name] is not None, (order, name)
            torch.testing.assert_close(got_grads[name], value, msg=lambda m: f"order {order}, {name}: {m}",
                                       **({} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)))


@pytest.mark.parametrize("op", ["lstm_layer", "gru_layer"])
def test_what_lies_in_the_padding_stays_out_of_second_order_gradients(backend, op):
    """NaN at a row's padded steps and NaN/inf in the initial state of a row of length 0: first and second-order
    gradients as the reference's with zeros there (the cpu layers, which never read them, recompute under
    create_graph through the reference, which must not read them either)."""
    if backend.name == "aten" and backend.device.type == "cuda":
        pytest.skip("aten's layers on a GPU are cuDNN's, which has no double backward (nor has torch.nn.LSTM there)")
    dtype = torch.float64 if backend.name in ("cpu", "aten") else torch.float32
    clean = on(dict(_inputs(op), lengths=torch.tensor([4, 0, 2])), backend.device, dtype)
    backend.skip_unless_served(op, clean, dtype)
    lengths = clean["lengths"]
    padded = (torch.arange(4, device=backend.device).unsqueeze(1) >= lengths.unsqueeze(0)).unsqueeze(2)
    empty = (lengths == 0).unsqueeze(1)
    clean["input"] = clean["input"].masked_fill(padded, 0)
    poisoned = dict(clean, input=clean["input"].masked_fill(padded, float("nan")))
    for name, value in (("hx", float("nan")), ("cx", float("inf"))):
        if name in clean:
            clean[name] = clean[name].masked_fill(empty, 0)
            poisoned[name] = clean[name].masked_fill(empty, value)
    got, expected = _penalty(op, poisoned, backend.name), _penalty(op, clean, "reference")
    for order, (got_grads, expected_grads) in enumerate(zip(got, expected), start=1):
        for name, value in expected_grads.items():
            torch.testing.assert_close(got_grads[name], value, msg=lambda m: f"order {order}, {name}: {m}",
                                       **({} if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)))


def test_first_order_gradients_take_the_kernels_backward_not_the_reference():
    """Only a backward asked to build a graph goes through the reference: a plain backward runs the kernels'."""
    from s2s_fast import backends

    if backends.unavailable_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("the cpu backend is not built")
    args = _inputs("lstm_layer")
    leaves = {k: v.requires_grad_() for k, v in args.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    output = F.lstm_layer(**args, backend="cpu")[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
        torch.autograd.grad(output.sum(), list(leaves.values()))
    names = {event.key for event in trace.key_averages()}
    assert "s2s_fast::cpu_lstm_layer_bwd" in names


@pytest.mark.parametrize("backend_name", ["auto", "cpu"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_gradient_penalty_through_the_drop_in_modules_matches_torch_nn(kind, backend_name):
    """s2s_fast.nn.LSTM and GRU (two bidirectional layers: the cells' steps chained, each step's hx depending on the
    weights through the steps before) under a gradient penalty, as torch.nn's: the cpu backend refused it, so the
    GRU did under auto on a CPU."""
    import s2s_fast.nn
    from s2s_fast import backends

    if backends.unavailable_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("the cpu backend is not built")
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(4, 5, num_layers=2, bidirectional=True).double()
    ours = getattr(s2s_fast.nn, kind)(4, 5, num_layers=2, bidirectional=True, backend=backend_name).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 3, 4, dtype=torch.float64)

    def penalised(module):
        inputs = x.clone().requires_grad_()
        output = module(inputs)[0]
        (grad,) = torch.autograd.grad(output.square().sum(), inputs, create_graph=True)
        return torch.autograd.grad(output.sum() + grad.square().sum(), list(module.parameters()))

    for got, expected in zip(penalised(ours), penalised(theirs)):
        torch.testing.assert_close(got, expected)


def test_under_autocast_the_second_order_gradients_are_those_of_the_forward_as_it_ran():
    """The recomputation runs in the dtypes the forward ran in: a backward under autocast (bfloat16) recomputed the
    float32 GRU layer in bfloat16, its gradients 0.03 off and the second-order ones 1.5."""
    from s2s_fast import backends

    if backends.unavailable_reason("cpu", torch.device("cpu")) is not None:
        pytest.skip("the cpu backend is not built")
    args = _inputs("gru_layer")
    results = []
    for autocast in (False, True):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in args.items()
                  if isinstance(v, torch.Tensor) and v.is_floating_point()}
        output = F.gru_layer(**{**args, **leaves}, backend="cpu")[0]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            first = torch.autograd.grad(output.square().sum(), list(leaves.values()), create_graph=True)
        second = torch.autograd.grad(sum(g.square().sum() for g in first), list(leaves.values()))
        results.append(first + second)
    for plain, autocast in zip(*results):
        torch.testing.assert_close(autocast, plain)
