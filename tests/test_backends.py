"""Backend selection order, errors for unknown and unavailable backends."""

import pytest
import torch

import s2s_fast
from s2s_fast.cuda import compiled as cuda_compiled
from s2s_fast import backends
from s2s_fast import functional as F


def _cell_args():
    return (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.randn(16, 3), torch.randn(16, 4))


def test_reference_always_available():
    assert "reference" in s2s_fast.available_backends()
    assert "reference" in s2s_fast.available_backends("cpu")
    assert set(s2s_fast.available_backends("cpu")) <= set(backends.BACKEND_NAMES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a CUDA device")
def test_no_backend_is_available_for_cuda_without_a_cuda_device():
    assert s2s_fast.available_backends("cuda") == []
    for name in backends.BACKEND_NAMES:
        assert "no CUDA device here" in backends.unavailable_reason(name, "cuda")


def test_auto_on_cpu_picks_aten_for_cells():
    name, _ = backends.resolve("lstm_cell", torch.device("cpu"), _cell_args())
    assert name == "aten"


def test_selection_order(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert s2s_fast.get_backend() == "auto"
    monkeypatch.setenv(backends.ENV_VAR, "reference")
    assert s2s_fast.get_backend() == "reference"
    s2s_fast.set_backend("triton")
    assert s2s_fast.get_backend() == "triton"
    with s2s_fast.use_backend("cuda"):
        assert s2s_fast.get_backend() == "cuda"
        with s2s_fast.use_backend("reference"):
            assert s2s_fast.get_backend() == "reference"
        assert s2s_fast.get_backend() == "cuda"
        # An explicit argument beats everything.
        name, _ = backends.resolve("lstm_cell", torch.device("cpu"), _cell_args(), backend="reference")
        assert name == "reference"
    assert s2s_fast.get_backend() == "triton"
    s2s_fast.set_backend(None)
    assert s2s_fast.get_backend() == "reference"


def test_unknown_names_raise_value_error(monkeypatch):
    for call in (lambda: s2s_fast.set_backend("cudnn"), lambda: s2s_fast.use_backend("x").__enter__(),
                 lambda: F.lstm_cell(*_cell_args(), backend="fast"), lambda: s2s_fast.available_backends("tpu")):
        with pytest.raises((ValueError, RuntimeError)) as info:
            call()
        if info.type is ValueError and "backend" in str(info.value):
            assert "reference" in str(info.value)
    monkeypatch.setenv(backends.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="S2S_FAST_BACKEND"):
        F.lstm_cell(*_cell_args())


@pytest.mark.skipif(cuda_compiled.EMULATED_GPU is not None, reason="the CUDA emulation serves CPU tensors")
def test_cuda_backend_on_cpu_tensors_says_why():
    with pytest.raises(RuntimeError, match="cuda") as info:
        F.lstm_cell(*_cell_args(), backend="cuda")
    assert "cpu" in str(info.value)


def test_layer_served_by_a_backend_cell(monkeypatch):
    """A backend with a cell op but no layer op serves the layer through the reference time loop."""
    import types

    from s2s_fast import reference

    calls = []

    def counting_cell(*args):
        calls.append(1)
        return reference.lstm_cell(*args)

    fake = types.SimpleNamespace(OPS={"lstm_cell": counting_cell}, LIMITS={}, unavailable_reason=lambda d: None)
    monkeypatch.setattr(backends, "_load", lambda name: (fake, None) if name == "triton" else (reference, None))
    x, h, c, w_ih, w_hh = torch.randn(3, 2, 5), torch.randn(2, 4), torch.randn(2, 4), torch.randn(16, 5), \
        torch.randn(16, 4)
    out, hy, cy = F.lstm_layer(x, h, c, w_ih, w_hh, backend="triton")
    assert len(calls) == 3
    expected = reference.lstm_layer(x, h, c, w_ih, w_hh)
    torch.testing.assert_close(out, expected[0])
    with pytest.raises(RuntimeError, match="does not implement gru_layer"):
        F.gru_layer(x, h, torch.randn(12, 5), torch.randn(12, 4), backend="triton")


def test_every_backend_serves_linear_with_torchs_own_where_it_has_none(monkeypatch):
    """A model on any backend has its projections: a backend without its own linear (all but cpu) gets torch's."""
    from s2s_fast import reference

    args = (torch.randn(3, 5), torch.randn(4, 5), torch.randn(4))
    # Every backend as if it could run here (the fused GPU backends are the ones this is for).
    monkeypatch.setattr(backends, "_unavailable", lambda name, device: None)
    for name in backends.BACKEND_NAMES:
        if name == "cpu":
            continue
        assert not backends.implements(name, "linear") or name == "reference"
        chosen, impl = backends.resolve("linear", torch.device("cpu"), args, backend=name)
        assert chosen == name and impl is reference.OPS["linear"]
        torch.testing.assert_close(F.linear(*args, backend=name), torch.nn.functional.linear(*args))


def test_auto_prefers_a_fused_layer_to_a_cell_loop(monkeypatch):
    """On CUDA tensors auto takes a later backend's own layer before an earlier one's cell in the time loop, and a
    cell loop before the reference."""
    import types

    from s2s_fast import reference

    def fake(ops):
        return types.SimpleNamespace(OPS=ops, LIMITS={}, unavailable_reason=lambda d: None)

    def layer(*args):
        return "fused layer"

    args = (torch.randn(3, 2, 5), torch.randn(2, 4), torch.randn(12, 5), torch.randn(12, 4), None, None, None, False)
    modules = {"cuda": fake({"gru_cell": reference.gru_cell}), "triton": fake({"gru_layer": layer}),
               "reference": reference}
    monkeypatch.setattr(backends, "_load", lambda name: (modules[name], None))
    name, impl = backends.resolve("gru_layer", torch.device("cuda"), args)
    assert name == "triton" and impl is layer
    modules["triton"] = fake({})
    name, impl = backends.resolve("gru_layer", torch.device("cuda"), args)
    assert name == "cuda" and impl.keywords["cell"] is reference.gru_cell
    modules["cuda"] = fake({})
    assert backends.resolve("gru_layer", torch.device("cuda"), args)[0] == "reference"


def test_limit_check_makes_auto_fall_back(monkeypatch):
    import types

    from s2s_fast import reference

    fake = types.SimpleNamespace(OPS={"lstm_cell": lambda *a: 1 / 0}, LIMITS={"lstm_cell": lambda *a: "float32 only"},
                                 unavailable_reason=lambda d: None)
    monkeypatch.setattr(backends, "_load", lambda name: (fake, None) if name != "reference" else (reference, None))
    # auto on a (pretend) CUDA device skips the refusing backends and lands on the reference
    name, _ = backends.resolve("lstm_cell", torch.device("cuda"), _cell_args())
    assert name == "reference"
    with pytest.raises(RuntimeError, match="float32 only"):
        backends.resolve("lstm_cell", torch.device("cuda"), _cell_args(), backend="triton")


def test_a_sparse_tensor_goes_to_the_reference_under_auto_and_is_refused_in_words_by_name():
    """Auto sent sparse tensors to the cpu backend, whose operators have no sparse kernel: a dispatcher error, where
    torch.nn.Linear (and the reference) take a sparse input."""
    from s2s_fast import nn as snn

    torch.manual_seed(0)
    x = torch.randn(8, 16).relu().to_sparse()
    dense, drop_in = torch.nn.Linear(16, 4), snn.Linear(16, 4)
    drop_in.load_state_dict(dense.state_dict())
    torch.testing.assert_close(drop_in(x), dense(x))
    q, k, values, v = torch.randn(2, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3), torch.randn(4)
    expected = F.additive_attention(q, k, v, values, backend="reference")
    for got, want in zip(F.additive_attention(q, k, v.to_sparse(), values), expected):
        torch.testing.assert_close(got, want)
    assert backends.resolve("linear", x.device, (x, dense.weight, dense.bias))[0] in ("aten", "reference")
    with pytest.raises(backends.BackendError, match="dense \\(strided\\) tensors, got a sparse_coo one"):
        backends.resolve("linear", x.device, (x, dense.weight, dense.bias), backend="cpu")
    # A backend that runs torch's own op for it (aten's linear) takes the sparse tensor as torch does.
    torch.testing.assert_close(F.linear(x, dense.weight, dense.bias, backend="aten"), dense(x))
    h, c = torch.zeros(8, 4), torch.zeros(8, 4)
    with pytest.raises(backends.BackendError, match="got a sparse_coo one"):
        F.lstm_cell(x, h, c, torch.randn(16, 16).to_sparse(), torch.randn(16, 4), backend="aten")


def test_auto_tries_triton_before_cuda_for_large_attention_on_a_gpu(monkeypatch):
    """Additive attention on CUDA tensors: cuda first below TRITON_ATTENTION_FROM_WORK (B * Tq * Tk * A), triton first
    from it, the bound for a call that records a gradient the higher one; other ops and devices keep their order."""
    import types

    from s2s_fast import reference

    serving = types.SimpleNamespace(OPS={"additive_attention": None}, LIMITS={}, unavailable_reason=lambda d: None)
    monkeypatch.setattr(backends, "_load", lambda name: ({"cuda": serving, "triton": serving,
                                                          "reference": reference}.get(name, serving), None))
    cuda = torch.device("cuda")

    def call(batch, queries, keys, attn, grad=False):
        q, k = torch.empty(batch, queries, attn, device="meta"), torch.empty(batch, keys, attn, device="meta")
        return (q.requires_grad_(grad), k, torch.empty(attn, device="meta"), torch.empty(batch, keys, 8, device="meta"),
                None)

    def first(args, op="additive_attention", device=cuda):
        return backends._auto_candidates(op, device, args)[0][0]

    assert first(call(64, 64, 64, 512)) == "cuda"  # 1.3e8
    assert first(call(128, 128, 128, 512)) == "triton"  # 1.07e9
    assert first(call(64, 64, 128, 512)) == "triton"  # 2.7e8, no gradient
    assert first(call(64, 64, 128, 512, grad=True)) == "cuda"  # under the training bound
    assert first(call(128, 128, 128, 512, grad=True)) == "triton"
    assert first(call(128, 128, 128, 512), device=torch.device("cpu")) == "cpu"
    assert first(call(128, 128, 128, 512), op="dot_attention") == "cuda"


def test_auto_routing_on_a_gpu_traces_with_symbolic_sizes():
    """Auto's measured tables (CUDNN_FASTER's ranges, TRITON_ATTENTION_FROM_WORK) under torch.compile with dynamic
    shapes: a traced batch size tested against a range failed Dynamo outright; routing must trace whole."""
    cuda = torch.device("cuda")

    def route(query, keys, x, h, c, w_ih, w_hh):
        attention = backends._auto_candidates("additive_attention", cuda, (query, keys, keys[0, 0], keys, None))
        cell = backends._auto_candidates("lstm_cell", cuda, (x, h, c, w_ih, w_hh, None, None))
        return query.sum() + len(attention) + len(cell)

    compiled = torch.compile(route, fullgraph=True, dynamic=True, backend="eager")
    for batch in (32, 33):
        hidden = torch.randn(batch, 512, dtype=torch.bfloat16)
        compiled(torch.randn(batch, 4, 8), torch.randn(batch, 5, 8), hidden, hidden, hidden,
                 torch.randn(2048, 512, dtype=torch.bfloat16), torch.randn(2048, 512, dtype=torch.bfloat16))


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="torch < 2.9 has no per-backend switches")
def test_float32_matmul_precision_puts_back_what_the_process_had():
    """backends.float32_matmul_precision: the word and torch's per-backend switches put back, a switch that inherited
    its parent's value inheriting it again, one the process set by hand kept and named; a bad word refused."""
    switches = (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)
    for switch in switches:  # as a process starts (set_float32_matmul_precision elsewhere wrote "ieee")
        switch.fp32_precision = "none"
    try:
        with backends.float32_matmul_precision("medium"):
            assert backends.matmul_precision_in_force() == "medium"
            assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
        assert backends.matmul_precision_record(torch.device("cpu")) == ("highest", "")
        assert [switch.fp32_precision for switch in switches] == ["none", "none"]
        torch.backends.fp32_precision = "tf32"  # the parent of every switch: they read "tf32" now
        with backends.float32_matmul_precision("high"):
            pass
        torch.backends.fp32_precision = "ieee"
        assert [switch.fp32_precision for switch in switches] == ["ieee", "ieee"]  # they follow it still
        torch.backends.fp32_precision = "none"
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # set by hand: torch reads no word then
        with backends.float32_matmul_precision("highest"):
            assert backends.matmul_precision_in_force() == "highest"
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
        assert backends.matmul_precision_in_force() == "mkldnn-bf16.cuda-none"
        with pytest.raises(ValueError, match="matmul precision must be one of highest, high, medium, got 'low'"):
            with backends.float32_matmul_precision("low"):
                pass
    finally:  # the process's start: every switch inheriting, the word "highest"
        torch.set_float32_matmul_precision("highest")
        torch.backends.fp32_precision = "none"
        for switch in switches:
            switch.fp32_precision = "none"
        assert torch.get_float32_matmul_precision() == "highest"
