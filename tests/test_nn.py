"""Drop-in modules against torch.nn: same parameters, state_dict keys, outputs and every gradient."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence

import s2s_fast
import s2s_fast.nn as snn
from s2s_fast.testing import tolerance

MODULES = {"lstm": (snn.LSTM, torch.nn.LSTM), "gru": (snn.GRU, torch.nn.GRU)}


def _pair(kind, dtype, **kwargs):
    ours_type, torch_type = MODULES[kind]
    theirs = torch_type(**kwargs).to(dtype)
    ours = ours_type(**kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _data(x):
    return x.data if isinstance(x, PackedSequence) else x


def _outputs(result):
    output, state = result
    states = state if isinstance(state, tuple) else (state,)
    return (_data(output),) + states


def _check_same(ours, theirs, make_input, make_hx, dtype):
    """Same forward and same gradients for the input, the initial state and every parameter."""
    tol = tolerance(dtype)
    runs = []
    for module in (ours, theirs):
        torch.manual_seed(1)
        inputs, leaves = make_input()
        hx, hx_leaves = make_hx()
        outs = _outputs(module(inputs, hx) if hx is not None else module(inputs))
        runs.append((outs, leaves + hx_leaves, module))
    (our_outs, our_leaves, _), (their_outs, their_leaves, _) = runs
    assert len(our_outs) == len(their_outs)
    generator = torch.Generator().manual_seed(2)
    upstream = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(dtype) for o in their_outs]
    for outs, leaves, module in runs:
        torch.autograd.backward(outs, upstream)
    for a, b in zip(our_outs, their_outs):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(our_leaves, their_leaves):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, **tol, msg=lambda m, n=name: f"{n}: {m}")


def _leaf(*shape, dtype):
    return torch.randn(*shape, dtype=dtype).requires_grad_(True)


CONFIGS = [(*config, torch.float64) for config in
           itertools.product(["lstm", "gru"], [1, 2, 3], [False, True], [False, True], [True, False])]
CONFIGS += [(kind, 2, True, batch_first, True, torch.float32) for kind in ("lstm", "gru") for batch_first in (False, True)]


@pytest.mark.parametrize("kind,layers,bidirectional,batch_first,bias,dtype", CONFIGS)
def test_rnn_matches_torch_padded(kind, layers, bidirectional, batch_first, bias, dtype):
    ours, theirs = _pair(kind, dtype, input_size=5, hidden_size=7, num_layers=layers, bias=bias,
                         batch_first=batch_first, bidirectional=bidirectional)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    steps, batch = 4, 3
    shape = (batch, steps, 5) if batch_first else (steps, batch, 5)
    x = torch.randn(shape, dtype=dtype)
    state_shape = (layers * (2 if bidirectional else 1), batch, 7)
    h0, c0 = torch.randn(state_shape, dtype=dtype), torch.randn(state_shape, dtype=dtype)

    def make_input():
        leaf = x.clone().requires_grad_(True)
        return leaf, [leaf]

    def make_hx():
        h, c = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
        return ((h, c), [h, c]) if kind == "lstm" else (h, [h])

    _check_same(ours, theirs, make_input, make_hx, dtype)
    _check_same(ours, theirs, make_input, lambda: (None, []), dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rnn_matches_torch_packed(kind, enforce_sorted, dtype):
    ours, theirs = _pair(kind, dtype, input_size=4, hidden_size=6, num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 4, 2, 1]) if enforce_sorted else torch.tensor([2, 5, 1, 4])
    x = torch.randn(5, 4, 4, dtype=dtype)
    h0, c0 = torch.randn(4, 4, 6, dtype=dtype), torch.randn(4, 4, 6, dtype=dtype)

    def make_input():
        leaf = x.clone().requires_grad_(True)
        return pack_padded_sequence(leaf, lengths, enforce_sorted=enforce_sorted), [leaf]

    def make_hx():
        h, c = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
        return ((h, c), [h, c]) if kind == "lstm" else (h, [h])

    _check_same(ours, theirs, make_input, make_hx, dtype)
    packed, _ = make_input()
    out_ours, out_theirs = ours(packed)[0], theirs(packed)[0]
    assert isinstance(out_ours, PackedSequence)
    assert torch.equal(out_ours.batch_sizes, out_theirs.batch_sizes)
    for a, b in ((out_ours.sorted_indices, out_theirs.sorted_indices),
                 (out_ours.unsorted_indices, out_theirs.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)


def test_pack_sequence_input():
    ours, theirs = _pair("lstm", torch.float64, input_size=3, hidden_size=4)
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in (2, 5, 3)]
    packed = pack_sequence(seqs, enforce_sorted=False)
    a, b = ours(packed), theirs(packed)
    torch.testing.assert_close(a[0].data, b[0].data)
    torch.testing.assert_close(a[1][0], b[1][0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_unbatched(kind):
    ours, theirs = _pair(kind, torch.float64, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, dtype=torch.float64)
    h = torch.randn(4, 4, dtype=torch.float64)
    hx = (h, torch.randn(4, 4, dtype=torch.float64)) if kind == "lstm" else h
    for args in ((x,), (x, hx)):
        a, b = _outputs(ours(*args)), _outputs(theirs(*args))
        for u, w in zip(a, b):
            assert u.shape == w.shape
            torch.testing.assert_close(u, w)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_dropout(kind):
    ours, theirs = _pair(kind, torch.float64, input_size=3, hidden_size=8, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    ours.train()
    torch.manual_seed(3)
    first = ours(x)[0]
    torch.manual_seed(3)
    again = ours(x)[0]
    torch.manual_seed(4)
    other = ours(x)[0]
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, theirs(x)[0])
    # Dropout sits between layers only: a one-layer module is unaffected by training mode.
    single, reference = _pair(kind, torch.float64, input_size=3, hidden_size=8, num_layers=1)
    single.train()
    torch.testing.assert_close(single(x)[0], reference(x)[0])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_state_dict_both_ways(kind):
    ours_type, torch_type = MODULES[kind]
    ours = ours_type(3, 5, num_layers=2, bidirectional=True)
    theirs = torch_type(3, 5, num_layers=2, bidirectional=True)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], **tolerance(torch.float32))
    assert isinstance(ours, torch.nn.RNNBase)
    assert repr(ours).replace(type(ours).__name__, "") == repr(theirs).replace(type(theirs).__name__, "")


def test_gru_refuses_proj_size():
    with pytest.raises(ValueError, match="only supported for LSTM"):
        snn.GRU(3, 5, proj_size=2)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_bad_input(kind):
    module = MODULES[kind][0](3, 5, num_layers=2)
    with pytest.raises(ValueError, match="input_size"):
        module(torch.randn(4, 2, 6))
    with pytest.raises(ValueError, match="dimensions"):
        module(torch.randn(4, 2, 3, 1))
    bad_h = torch.randn(1, 2, 5)
    with pytest.raises(ValueError, match="h_0"):
        module(torch.randn(4, 2, 3), (bad_h, bad_h) if kind == "lstm" else bad_h)
    with pytest.raises(ValueError, match="unknown backend"):
        MODULES[kind][0](3, 5, backend="cudnn")


# Bad input that torch.nn's modules reject with a ValueError, RuntimeError or TypeError; ``nn`` is torch.nn or
# s2s_fast.nn. (Mistakes torch only trips over by accident, with an AttributeError or IndexError, are left out.)
TORCH_REJECTS = {
    "LSTM input size": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 7)),
    "LSTM 4-d input": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3, 1)),
    "LSTM h_0 shape": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.randn(1, 3, 4),) * 2),
    "LSTM 2-d h_0 for batched input": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.randn(2, 4),) * 2),
    "LSTM input dtype": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64)),
    "LSTM integer input": lambda nn: nn.LSTM(3, 4)(torch.ones(5, 2, 3, dtype=torch.long)),
    "LSTM h_0 dtype": lambda nn: nn.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.randn(1, 2, 4, dtype=torch.float64),
                                                                     torch.randn(1, 2, 4))),
    "LSTM input on another device": lambda nn: nn.LSTM(3, 4)(torch.empty(5, 2, 3, device="meta")),
    "LSTM packed input size": lambda nn: nn.LSTM(3, 4)(pack_padded_sequence(torch.randn(5, 2, 7),
                                                                            torch.tensor([5, 3]))),
    "GRU input size": lambda nn: nn.GRU(3, 4)(torch.randn(5, 2, 7)),
    "GRU h_0 shape": lambda nn: nn.GRU(3, 4)(torch.randn(5, 2, 3), torch.randn(1, 3, 4)),
    "GRU input dtype": lambda nn: nn.GRU(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64)),
    "LSTMCell input size": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 7)),
    "LSTMCell 3-d input": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3, 1)),
    "LSTMCell hx batch": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(3, 4),) * 2),
    "LSTMCell hx size": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(2, 5),) * 2),
    "LSTMCell hx not a pair": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3), torch.randn(2, 4)),
    "LSTMCell 1-d hx for 2-d input": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3), (torch.randn(4),) * 2),
    "LSTMCell input dtype": lambda nn: nn.LSTMCell(3, 4)(torch.randn(2, 3, dtype=torch.float64)),
    "GRUCell input size": lambda nn: nn.GRUCell(3, 4)(torch.randn(2, 7)),
    "GRUCell hx batch": lambda nn: nn.GRUCell(3, 4)(torch.randn(2, 3), torch.randn(3, 4)),
    "GRUCell integer input": lambda nn: nn.GRUCell(3, 4)(torch.ones(2, 3, dtype=torch.long)),
    "LSTM no steps": lambda nn: nn.LSTM(3, 4)(torch.randn(0, 2, 3)),
    "GRU no steps, unbatched": lambda nn: nn.GRU(3, 4)(torch.randn(0, 3)),
    "GRU proj_size": lambda nn: nn.GRU(3, 4, proj_size=2),
    "LSTM dropout": lambda nn: nn.LSTM(3, 4, dropout=2.0),
}


@pytest.mark.parametrize("case", TORCH_REJECTS)
def test_bad_input_raises_an_error_of_the_class_torch_nn_raises(case):
    """The README's policy: a ValueError or TypeError that names the argument, which is also an instance of what
    torch.nn raises for the same mistake (RuntimeError for most), so code written around torch.nn still catches it."""
    with pytest.raises(Exception) as theirs:
        TORCH_REJECTS[case](torch.nn)
    with pytest.raises(Exception) as ours:
        TORCH_REJECTS[case](snn)
    assert type(theirs.value) in (ValueError, RuntimeError, TypeError)
    assert isinstance(ours.value, type(theirs.value)) and isinstance(ours.value, (ValueError, TypeError)), (
        type(ours.value).__mro__, theirs.value)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("backend", s2s_fast.available_backends("cpu") + ["auto"])
def test_an_empty_batch_trains_as_in_torch(kind, backend):
    """B = 0: outputs in autograd's graph, so a training step runs; every gradient is zero (of its shape)."""
    ours, theirs = _pair(kind, torch.float32, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ours.backend = backend
    for module in (ours, theirs):
        try:
            output, state = module(torch.randn(5, 0, 3, requires_grad=True))
        except s2s_fast.backends.BackendError as refusal:  # a backend that says it serves no empty tensors
            pytest.skip(str(refusal))
        states = state if isinstance(state, tuple) else (state,)
        assert output.requires_grad and all(s.requires_grad for s in states)
        torch.autograd.backward([output.sum(), *(s.sum() for s in states)])
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_match_torch(kind, bias):
    ours_type, torch_type = (snn.LSTMCell, torch.nn.LSTMCell) if kind == "lstm" else (snn.GRUCell, torch.nn.GRUCell)
    theirs = torch_type(5, 7, bias=bias).double()
    ours = ours_type(5, 7, bias=bias).double()
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for batched in (True, False):
        x = torch.randn(*((3,) if batched else ()), 5, dtype=torch.float64)
        h = torch.randn(*((3,) if batched else ()), 7, dtype=torch.float64)
        hx = (h, h * 0.5) if kind == "lstm" else h
        for args in ((x,), (x, hx)):
            a, b = ours(*args), theirs(*args)
            for u, w in zip(*(((a,), (b,)) if kind == "gru" else (a, b))):
                assert u.shape == w.shape
                torch.testing.assert_close(u, w)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    out = ours(x)
    (out[0] if kind == "lstm" else out).sum().backward()
    expected_grad = x.grad.clone()
    x.grad = None
    out = theirs(x)
    (out[0] if kind == "lstm" else out).sum().backward()
    torch.testing.assert_close(x.grad, expected_grad)


@pytest.mark.parametrize("backend", [None, "cpu", "reference"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(backend, bias):
    """snn.Linear: torch.nn.Linear's arguments, parameters, state_dict keys, outputs and gradients, on any backend;
    input validation from functional (the class torch.nn raises)."""
    if backend is not None and s2s_fast.backends.unavailable_reason(backend, "cpu") is not None:
        pytest.skip(f"{backend} unavailable here")
    theirs = torch.nn.Linear(5, 7, bias=bias).double()
    ours = snn.Linear(5, 7, bias=bias, backend=backend, dtype=torch.float64)
    assert isinstance(ours, torch.nn.Linear) and ours.backend == backend
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for shape in ((3, 5), (5,), (2, 4, 5)):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        torch.testing.assert_close(ours(x), theirs(x))
        grads = torch.autograd.grad(ours(x).square().sum(), [x, *ours.parameters()])
        expected = torch.autograd.grad(theirs(x).square().sum(), [x, *theirs.parameters()])
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want)
    with pytest.raises(RuntimeError, match="input must be"):
        ours(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown backend"):
        snn.Linear(5, 7, backend="nope")


def test_additive_attention_module():
    attention = snn.AdditiveAttention(6, 4, 5).double()
    query = torch.randn(2, 6, dtype=torch.float64)
    keys = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    context, weights = attention(query, keys, mask=mask)
    scores = torch.tanh(attention.query_layer(query)[:, None] + attention.key_layer(keys)) @ attention.v
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, (expected[:, :, None] * keys).sum(1))
    again = attention(query, None, values=keys, mask=mask, key_proj=attention.project_keys(keys))
    torch.testing.assert_close(again[0], context)
    many_context, _ = attention(query[:, None].expand(2, 4, 6), keys, mask=mask)
    torch.testing.assert_close(many_context[:, 2], context)
    with pytest.raises(ValueError, match="keys"):
        attention(query)


@pytest.mark.parametrize("method", ["general", "dot"])
def test_luong_attention_module(method):
    attention = snn.LuongAttention(4, 4, method=method).double()
    query = torch.randn(2, 4, dtype=torch.float64)
    keys = torch.randn(2, 3, 4, dtype=torch.float64)
    values = torch.randn(2, 3, 2, dtype=torch.float64)
    context, weights = attention(query, keys, values)
    projected = keys if method == "dot" else keys @ attention.key_layer.weight.T
    expected = torch.softmax(torch.einsum("bd,bkd->bk", query, projected), -1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, torch.einsum("bk,bkv->bv", expected, values))
    with pytest.raises(ValueError, match="query_size == key_size"):
        snn.LuongAttention(4, 5, method="dot")
    with pytest.raises(ValueError, match="method"):
        snn.LuongAttention(4, 4, method="concat")


def test_dropout_is_torch_nn_dropout_with_a_backend():
    x = torch.randn(64, 50)
    ours, theirs = snn.Dropout(0.4), torch.nn.Dropout(0.4)
    assert isinstance(ours, torch.nn.Dropout) and repr(ours) == repr(theirs) and not ours.state_dict()
    ours.eval()
    assert ours(x) is x
    ours.train()
    y = ours(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.6)
    assert 0.4 < float(kept.float().mean()) < 0.8
    # The reference backend is torch's own dropout: its mask under the same seed.
    torch.manual_seed(5)
    expected = theirs(x)
    torch.manual_seed(5)
    assert torch.equal(snn.Dropout(0.4, backend="reference")(x), expected)
    with pytest.raises(ValueError, match="inplace=True is not supported"):
        snn.Dropout(0.4, inplace=True)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        snn.Dropout(1.5)


def test_module_utilities_and_torch_nn_methods_work_as_on_torch_nn():
    """From an audit against torch.nn: skip_init refused Linear and the cells (their signatures hid device);
    LSTM lacked torch.nn.LSTM's methods for its (h, c) pair (check_forward_args and permute_hidden crashed on the
    tuple)."""
    for drop_in, torch_module in ((snn.Linear, torch.nn.Linear), (snn.LSTMCell, torch.nn.LSTMCell),
                                  (snn.GRUCell, torch.nn.GRUCell)):
        module = torch.nn.utils.skip_init(drop_in, 3, 4)
        assert type(module) is drop_in
        assert [p.shape for p in module.parameters()] == [p.shape for p in torch_module(3, 4).parameters()]
    assert snn.Linear(3, 4, backend="reference").backend == "reference"
    x, perm = torch.randn(5, 2, 3), torch.tensor([1, 0])
    ours, theirs = snn.LSTM(3, 4, proj_size=2), torch.nn.LSTM(3, 4, proj_size=2)
    hidden = (torch.randn(1, 2, 2), torch.randn(1, 2, 4))
    assert ours.get_expected_cell_size(x, None) == theirs.get_expected_cell_size(x, None) == (1, 2, 4)
    ours.check_forward_args(x, hidden, None)
    with pytest.raises(RuntimeError, match="Expected hidden\\[1\\] size"):
        ours.check_forward_args(x, (hidden[0], hidden[1][..., :2]), None)
    for a, b in zip(ours.permute_hidden(hidden, perm), theirs.permute_hidden(hidden, perm)):
        assert torch.equal(a, b)


def test_what_the_drop_ins_cannot_do_is_refused_in_words():
    """Each was accepted and dropped (an LSTMCell's c beside h None; inplace set on a Dropout after construction),
    or failed deep inside (an attention of size 0), or spoke of an LSTM (a GRU's proj_size)."""
    cell, x, c = snn.LSTMCell(3, 4), torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(TypeError, match="hx must be a pair \\(h, c\\) of tensors, or None, got \\['NoneType', "):
        cell(x, (None, c))
    with pytest.raises(TypeError, match="GRUCell: hx must be a tensor, or None, got tuple"):
        snn.GRUCell(3, 4)(x, (c,))
    dropout = snn.Dropout(0.5)
    dropout.inplace = True
    with pytest.raises(ValueError, match="inplace=True is not supported"):
        dropout(x)
    with pytest.raises(ValueError, match="attn_size must be a positive integer, got 0"):
        snn.AdditiveAttention(4, 4, 0)
    for size in (0, 4, -1):
        with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, not GRU"):
            snn.GRU(3, 4, proj_size=size)
