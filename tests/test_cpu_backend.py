"""The cpu backend (csrc/cpu/ kernels bound as torch.ops.s2s_fast.cpu_*) against the reference.

The LSTM and GRU layers (lengths, both directions, bias layouts, strides, routing) and fused additive attention, one query per
row and many, forward and every gradient (float64 at its tolerances;
float32 within twice the reference's own error against float64), masks with empty rows, awkward shapes,
non-contiguous inputs, outputs poisoned (torch fills fresh tensors with NaN under deterministic algorithms),
opcheck, torch.compile, each instruction set the library is built for, and the fallbacks.
"""

import collections
import functools
import math
import os
import pathlib
import platform
import subprocess
import sys

import pytest
import torch

import s2s_fast
from s2s_fast import backends
from s2s_fast import cpu as cpu_backend
from s2s_fast import functional as F
from s2s_fast.cpu import compiled
from s2s_fast.testing import compare_low_precision_with_reference, compare_with_reference, dropout_kept, \
    forward_backward

_CPU_VENDOR = backends.cpu_vendor  # taken at import, before conftest pins it for each test
_CPU_HAS_AVX512 = backends.cpu_has_avx512  # likewise

built = pytest.mark.skipif(compiled.MISSING_REASON is not None, reason=f"{compiled.MISSING_REASON}")


def _attention_args(batch, queries, keys, attn, value_size, dtype=torch.float64, mask="random", seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = functools.partial(torch.randn, generator=generator, dtype=dtype)
    query_shape = (batch, attn) if queries is None else (batch, queries, attn)
    args = dict(query_proj=t(query_shape), key_proj=t(batch, keys, attn), v=t(attn) / max(attn, 1) ** 0.5,
                values=t(batch, keys, value_size), mask=None)
    if mask != "none":
        mask_tensor = torch.rand(batch, keys, generator=generator) > 0.4
        if keys:
            mask_tensor[:, 0] = True
        if mask == "empty_row" and batch:
            mask_tensor[batch // 2] = False
        args["mask"] = mask_tensor
    return args


def _both():
    return (lambda **a: F.additive_attention(**a, backend="cpu"),
            lambda **a: F.additive_attention(**a, backend="reference"))


@pytest.fixture
def poisoned():
    """Fresh tensors (the kernels' outputs included) start as NaN, so an element a kernel leaves unwritten shows."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


SHAPES = [
    # B, Tq (None: one query per row), Tk, A, Dv
    (3, 5, 7, 33, 9),
    (2, None, 6, 16, 4),
    (4, 3, 1, 1, 1),
    (1, 1, 1, 17, 2),
    (5, None, 13, 47, 31),
    (2, 4, 64, 128, 3),
    (2, 3, 0, 8, 5),
    (0, 3, 4, 8, 5),
    (2, 0, 4, 8, 5),
]


@built
@pytest.mark.parametrize("mask", ["none", "random", "empty_row"])
@pytest.mark.parametrize("batch,queries,keys,attn,value_size", SHAPES)
def test_attention_matches_reference_float64(poisoned, batch, queries, keys, attn, value_size, mask):
    args = _attention_args(batch, queries, keys, attn, value_size, mask=mask)
    compare_with_reference(*_both(), args)


@built
@pytest.mark.parametrize("mask", ["none", "empty_row"])
@pytest.mark.parametrize("batch,queries,keys,attn,value_size", [(3, 5, 7, 33, 9), (8, 32, 32, 128, 128),
                                                               (16, None, 50, 256, 64)])
def test_attention_float32_error_within_twice_the_references(poisoned, batch, queries, keys, attn, value_size, mask):
    args = _attention_args(batch, queries, keys, attn, value_size, mask=mask)
    compare_low_precision_with_reference(*_both(), args, torch.float32)


@built
def test_empty_rows_give_zero_weights_context_and_gradients():
    args = _attention_args(4, 3, 5, 8, 6, mask="empty_row")
    args["mask"][2] = False
    leaves = {k: v.requires_grad_(True) for k, v in args.items() if k != "mask"}
    context, weights = F.additive_attention(**args, backend="cpu")
    assert torch.equal(weights[2], torch.zeros_like(weights[2])) and torch.equal(context[2], torch.zeros_like(context[2]))
    (context.sum() + weights.sum()).backward()
    assert torch.isfinite(leaves["query_proj"].grad).all() and not leaves["query_proj"].grad[2].any()


@built
def test_non_contiguous_inputs():
    """Strided rows are read in place (time-major tensors read batch-first, a key set expanded over the batch);
    rows that are not contiguous themselves are copied first."""
    args = _attention_args(3, 4, 6, 10, 5)
    args["query_proj"] = args["query_proj"].transpose(0, 1).contiguous().transpose(0, 1)
    args["key_proj"] = torch.randn(6, 1, 10, dtype=torch.float64).transpose(0, 1).expand(3, 6, 10)
    args["values"] = torch.randn(5, 6, 3, dtype=torch.float64).permute(2, 1, 0)
    args["v"] = torch.randn(20, dtype=torch.float64)[::2]
    compare_with_reference(*_both(), args)
    args["key_proj"] = torch.randn(3, 10, 6, dtype=torch.float64).transpose(1, 2)
    args["values"] = torch.randn(6, 3, 5, dtype=torch.float64).transpose(0, 1)
    compare_with_reference(*_both(), args)


@built
def test_gradients_are_deterministic():
    args = _attention_args(6, 9, 40, 64, 16, dtype=torch.float32)
    results = []
    for _ in range(2):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in args.items() if k != "mask"}
        context, weights = F.additive_attention(**leaves, mask=args["mask"], backend="cpu")
        grads = torch.autograd.grad((context, weights), list(leaves.values()),
                                    (torch.ones_like(context), torch.ones_like(weights)))
        results.append(grads)
    for first, second in zip(*results):
        assert torch.equal(first, second)


@built
def test_saves_only_the_weights_beyond_its_inputs():
    """No [B, Tq, Tk, A] tensor: what the forward keeps besides its inputs is the [B, Tq, Tk] weights."""
    args = _attention_args(4, 8, 8, 32, 16, dtype=torch.float32)
    leaves = {k: v.requires_grad_(True) for k, v in args.items() if k != "mask"}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _, weights = F.additive_attention(**args, backend="cpu")
    inputs = {t.data_ptr() for t in args.values() if t is not None}  # the mask too (for a double backward)
    extra = [t for t in saved if t.data_ptr() not in inputs]
    assert [tuple(t.shape) for t in extra] == [tuple(weights.shape)]


@built
@pytest.mark.parametrize("queries", [None, 3])
def test_opcheck(queries):
    args = _attention_args(3, queries or 1, 5, 7, 4, dtype=torch.float32)
    args["query_proj"] = args["query_proj"].reshape(3, queries or 1, 7)
    forward = (args["query_proj"], args["key_proj"], args["v"], args["values"], args["mask"])
    torch.library.opcheck(torch.ops.s2s_fast.cpu_additive_attention_fwd, forward)
    torch.library.opcheck(torch.ops.s2s_fast.cpu_additive_attention_fwd, forward[:4] + (None,))
    grad_leaves = tuple(t.detach().requires_grad_(True) for t in forward[:4]) + (forward[4],)
    torch.library.opcheck(torch.ops.s2s_fast.cpu_additive_attention_fwd, grad_leaves)
    context, weights = torch.ops.s2s_fast.cpu_additive_attention_fwd(*forward)
    backward = (torch.randn_like(context), torch.randn_like(weights), *forward[:4], weights)
    torch.library.opcheck(torch.ops.s2s_fast.cpu_additive_attention_bwd, backward)


@built
@pytest.mark.parametrize("name,bad", [("query_proj", (1, 1, 7)), ("query_proj", (3, 1, 6)), ("v", (1,)),
                                      ("values", (3, 4, 4)), ("values", (2, 5, 4))])
def test_the_ops_called_directly_refuse_inputs_that_disagree(name, bad):
    """Both directions check query_proj, key_proj, v and values against each other (the backward read past the end
    of a smaller one: garbage, or a segfault)."""
    args = _attention_args(3, 1, 5, 7, 4, dtype=torch.float32)
    args["query_proj"] = args["query_proj"].reshape(3, 1, 7)
    context, weights = torch.ops.s2s_fast.cpu_additive_attention_fwd(args["query_proj"], args["key_proj"], args["v"],
                                                                     args["values"], None)
    args[name] = torch.randn(bad)
    inputs = (args["query_proj"], args["key_proj"], args["v"], args["values"])
    with pytest.raises(RuntimeError, match=f"{name} must have shape"):
        torch.ops.s2s_fast.cpu_additive_attention_fwd(*inputs, None)
    with pytest.raises(RuntimeError, match=f"{name} must have shape"):
        torch.ops.s2s_fast.cpu_additive_attention_bwd(torch.randn_like(context), torch.randn_like(weights), *inputs,
                                                      weights)


@built
def test_torch_compile_traces_the_op_in_one_graph():
    args = _attention_args(2, 3, 5, 8, 4, dtype=torch.float32)

    def attend(query_proj, key_proj, v, values, mask):
        context, weights = F.additive_attention(query_proj, key_proj, v, values, mask, backend="cpu")
        return context.sum() + (weights * weights).sum()

    leaves = {k: v.requires_grad_(True) for k, v in args.items() if k != "mask"}
    compiled_attend = torch.compile(attend, backend="aot_eager", fullgraph=True)
    eager = torch.autograd.grad(attend(**args), list(leaves.values()))
    traced = torch.autograd.grad(compiled_attend(**args), list(leaves.values()))
    for got, expected in zip(traced, eager):
        torch.testing.assert_close(got, expected)


@built
@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_each_instruction_set_matches_the_reference(capability):
    """ATEN_CPU_CAPABILITY caps the instruction set torch (and so the library) runs with: every set the library is
    built for runs the same checks."""
    script = (
        "import torch, s2s_fast\n"
        "from s2s_fast import functional as F\n"
        "from s2s_fast.testing import compare_low_precision_with_reference\n"
        "print(torch.ops.s2s_fast.cpu_kernel_capability())\n"
        "torch.manual_seed(0)\n"
        "args = dict(query_proj=torch.randn(3, 5, 37), key_proj=torch.randn(3, 11, 37), v=torch.randn(37) / 6,\n"
        "            values=torch.randn(3, 11, 7), mask=torch.rand(3, 11) > 0.3)\n"
        "args['mask'][1] = False\n"
        "compare_low_precision_with_reference(lambda **a: F.additive_attention(**a, backend='cpu'),\n"
        "    lambda **a: F.additive_attention(**a, backend='reference'), args, torch.float32)\n"
        "layer = dict(input=torch.randn(9, 5, 6), hx=torch.randn(5, 21), cx=torch.randn(5, 21),\n"
        "             weight_ih=torch.randn(84, 6) / 4, weight_hh=torch.randn(84, 21) / 4, bias_ih=torch.randn(84),\n"
        "             bias_hh=None, lengths=torch.tensor([9, 0, 3, 8, 1]))\n"
        "gru = dict(layer, weight_ih=layer['weight_ih'][:63], weight_hh=layer['weight_hh'][:63],\n"
        "           bias_ih=layer['bias_ih'][:63])\n"
        "del gru['cx']\n"
        "for reverse in (False, True):\n"
        "    for op, args in ((F.lstm_layer, layer), (F.gru_layer, gru)):\n"
        "        compare_low_precision_with_reference(lambda **a: op(**a, reverse=reverse, backend='cpu'),\n"
        "            lambda **a: op(**a, reverse=reverse, backend='reference'), args, torch.float32)\n"
        "# NaN propagates through the kernels' tanh and sigmoid as through torch's; infinity saturates them.\n"
        "odd = dict(query_proj=torch.randn(3, 5, 37), key_proj=torch.randn(3, 11, 37), v=torch.randn(37) / 6,\n"
        "           values=torch.randn(3, 11, 7), mask=torch.rand(3, 11) > 0.3)\n"
        "odd['query_proj'][0, 2, 5], odd['query_proj'][2, 1, 4] = float('nan'), float('inf')\n"
        "got = F.additive_attention(**odd, backend='cpu')[0]\n"
        "want = F.additive_attention(**odd, backend='reference')[0]\n"
        "assert torch.equal(got.isnan(), want.isnan()) and got[0, 2].isnan().all() and got.isnan().sum() == 7\n"
        "torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-5, atol=1e-5)\n"
        "for op, plain in ((F.lstm_layer, layer), (F.gru_layer, gru)):\n"
        "    odd = dict(plain, input=plain['input'].clone())\n"
        "    odd['input'][2, 3, 1], odd['input'][0, 0, 2] = float('nan'), float('-inf')\n"
        "    for got, want in zip(op(**odd, backend='cpu'), op(**odd, backend='reference')):\n"
        "        assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()\n"
        "logits = torch.randn(9, 1001) * 4\n"
        "logits[3, 17] = float('nan')\n"
        "for banned in (None, 0, 500, 1000, int(logits[0].argmax())):\n"
        "    best, token = F.log_softmax_max(logits, banned, backend='cpu')\n"
        "    expected_best, expected_token = F.log_softmax_max(logits, banned, backend='reference')\n"
        "    assert torch.equal(token, expected_token)\n"
        "    torch.testing.assert_close(best, expected_best, rtol=1e-5, atol=1e-5)\n"
        "scores = torch.randn(3, 3, dtype=torch.float64)\n"
        "for banned in (None, 500):\n"
        "    top, index = F.beam_candidates(logits, scores, 6, banned, backend='cpu')\n"
        "    expected_top, expected_index = F.beam_candidates(logits, scores, 6, banned, backend='reference')\n"
        "    assert torch.equal(index, expected_index)\n"
        "    torch.testing.assert_close(top, expected_top, rtol=1e-5, atol=1e-5)\n"
        "kept = torch.ops.s2s_fast.cpu_dropout(torch.ones(70001), 0.3, torch.tensor(987654321987)) != 0\n"
        "print(''.join('1' if k else '0' for k in kept.tolist()))\n")
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    expected = {"default": "DEFAULT", "avx2": "AVX2"}[capability]
    if capability == "avx2" and torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        expected = "DEFAULT"
    assert result.stdout.split()[0] == expected
    # Dropout's mask is the documented hash on every instruction set.
    kept = dropout_kept(70001, 987654321987, 0.3).tolist()
    assert result.stdout.split()[1] == "".join("1" if k else "0" for k in kept)


@built
def test_auto_picks_cpu_for_attention_and_falls_back_for_other_dtypes():
    args = tuple(_attention_args(2, 3, 4, 5, 6, dtype=torch.float32).values())
    assert backends.resolve("additive_attention", torch.device("cpu"), args)[0] == "cpu"
    assert "cpu" in s2s_fast.available_backends("cpu")
    half = tuple(t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in args)
    assert backends.resolve("additive_attention", torch.device("cpu"), half)[0] == "reference"
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot serve additive_attention.*bfloat16"):
        F.additive_attention(*half, backend="cpu")
    with pytest.raises(RuntimeError, match="does not implement dot_attention"):
        F.dot_attention(torch.randn(2, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 5), backend="cpu")


@built
def test_kernel_errors_are_clear():
    args = _attention_args(2, 3, 4, 5, 6, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="values has dtype Double but query_proj has Float"):
        torch.ops.s2s_fast.cpu_additive_attention_fwd(args["query_proj"], args["key_proj"], args["v"],
                                                      args["values"].double(), None)
    with pytest.raises(RuntimeError, match=r"v must have shape \[5\]"):
        torch.ops.s2s_fast.cpu_additive_attention_fwd(args["query_proj"], args["key_proj"], args["v"][:4],
                                                      args["values"], None)


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info(),
                    reason="the kernels use OpenMP threads where torch does: Linux builds of torch")
def test_kernels_run_on_torchs_threads():
    # ATen's parallel_for is inline: a library compiled without OpenMP ran every kernel on one thread.
    threads = torch.get_num_threads()
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            assert torch.ops.s2s_fast.cpu_kernel_threads(8) == count
            assert torch.ops.s2s_fast.cpu_kernel_threads(1) == 1
    finally:
        torch.set_num_threads(threads)


def test_unavailable_reason_says_how_to_build():
    from s2s_fast import cpu

    if compiled.MISSING_REASON is None:
        assert cpu.unavailable_reason(torch.device("cpu")) is None
        assert "CPU tensors only" in cpu.unavailable_reason(torch.device("cuda"))
    else:
        assert "build_ext --inplace" in cpu.unavailable_reason(torch.device("cpu"))


def test_an_install_without_the_kernels_is_told_once_that_cpu_tensors_run_slower(monkeypatch):
    """pip shows nothing of a build without a C++ compiler: the first call auto serves without the kernels says so."""
    missing = "the cpu backend's kernels s2s_fast._cpu are not built (No module named 's2s_fast._cpu'); pip install ..."
    real = backends._unavailable
    monkeypatch.setattr(backends, "_unavailable", lambda name, device: missing if name == "cpu" else real(name, device))
    monkeypatch.setattr(backends, "_told_cpu_kernels_missing", False)
    args = _attention_args(2, 3, 4, 5, 6, dtype=torch.float32)
    with pytest.warns(UserWarning) as caught:
        for _ in range(3):
            F.additive_attention(**args)
            F.lstm_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.randn(16, 3), torch.randn(16, 4))
    assert [str(w.message) for w in caught] == [f"s2s_fast: CPU tensors run on the aten and reference backends, "
                                                f"slower: {missing}"]
    assert caught[0].filename == __file__  # pointed at the caller's line


# The LSTM and GRU layers.

GATES = {"lstm": 4, "gru": 3}


def _layer_args(kind, steps, batch, input_size, hidden, dtype=torch.float64, lengths="random", bias=(True, True),
                seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = functools.partial(torch.randn, generator=generator, dtype=dtype)
    scale = hidden ** -0.5 if hidden else 1.0
    gates = GATES[kind]
    args = dict(input=t(steps, batch, input_size), hx=t(batch, hidden))
    if kind == "lstm":
        args["cx"] = t(batch, hidden)
    args.update(weight_ih=t(gates * hidden, input_size) * scale, weight_hh=t(gates * hidden, hidden) * scale,
                bias_ih=t(gates * hidden) if bias[0] else None, bias_hh=t(gates * hidden) if bias[1] else None,
                lengths=None)
    if lengths == "random" and batch:
        args["lengths"] = torch.randint(0, steps + 1, (batch,), generator=generator)
        args["lengths"][0] = steps
    elif lengths == "zero":
        args["lengths"] = torch.zeros(batch, dtype=torch.int64)
    elif lengths == "short":  # every row shorter than T, ties among them: no row runs the last step
        args["lengths"] = torch.randint(0, max(steps, 1), (batch,), generator=generator).clamp(max=max(steps - 1, 0))
    elif lengths == "full":  # lengths given, every row running T steps
        args["lengths"] = torch.full((batch,), steps, dtype=torch.int64)
    return args


def _layers(kind, reverse):
    op = getattr(F, f"{kind}_layer")
    return (lambda **a: op(**a, reverse=reverse, backend="cpu"),
            lambda **a: op(**a, reverse=reverse, backend="reference"))


LAYER_SHAPES = [
    # T, B, I, H
    (1, 1, 1, 1),
    (7, 5, 4, 17),
    (12, 9, 33, 20),
    (5, 3, 2, 40),
    (0, 3, 4, 5),
    (4, 0, 3, 5),
    (5, 45, 6, 130),  # a step's rows split between torch's two threads (rnn_step_grain)
]


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", ["none", "random", "zero", "short", "full"])
@pytest.mark.parametrize("steps,batch,input_size,hidden", LAYER_SHAPES)
def test_layer_matches_reference_float64(poisoned, kind, steps, batch, input_size, hidden, lengths, reverse):
    """Forward and every gradient (input, states, weights, biases; upstream gradients on every output), with rows
    of every length, 0 included, in both directions. The layer runs each step's running rows only, longest first
    (csrc/cpu/rnn_layer_binding.h): rows of equal length, no row reaching T, and lengths given that are all T (the
    padded layout kept) are cases of their own."""
    args = _layer_args(kind, steps, batch, input_size, hidden, lengths=lengths)
    compare_with_reference(*_layers(kind, reverse), args)


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [(False, True), (True, False), (False, False)])
def test_layer_bias_layouts(kind, bias):
    args = _layer_args(kind, 6, 4, 5, 7, bias=bias)
    compare_with_reference(*_layers(kind, True), args)


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_float32_error_within_twice_the_references(kind, reverse):
    args = _layer_args(kind, 20, 6, 24, 48, dtype=torch.float32, seed=3)
    compare_low_precision_with_reference(*_layers(kind, reverse), args, torch.float32)


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_non_contiguous_inputs(kind):
    """A batch-first input read time-major, transposed weights: the op takes any strides."""
    args = _layer_args(kind, 6, 4, 5, 7)
    args["input"] = args["input"].transpose(0, 1).contiguous().transpose(0, 1)
    args["weight_ih"] = args["weight_ih"].t().contiguous().t()
    args["hx"] = args["hx"].t().contiguous().t()
    compare_with_reference(*_layers(kind, False), args)


@built
@pytest.mark.parametrize("kind,kept", [("lstm", [(5, 3, 6), (5, 3, 24)]), ("gru", [(5, 3, 24)])])
def test_layer_saves_gates_beyond_its_inputs_and_output(kind, kept):
    """What the backward needs besides the inputs and the output: the LSTM's gates and c, the GRU's r, z, n, h_n."""
    args = _layer_args(kind, 5, 3, 4, 6, dtype=torch.float32)
    leaves = {k: v.requires_grad_(True) for k, v in args.items() if k != "lengths" and v is not None}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        output = getattr(F, f"{kind}_layer")(**args, backend="cpu")[0]
    assert bool((args["lengths"] < 5).any())  # padded rows: the layer reads the input as given (no zeroed copy)
    known = {t.data_ptr() for t in leaves.values()} | {output.data_ptr(), args["lengths"].data_ptr()}
    assert sorted(tuple(t.shape) for t in saved if t.data_ptr() not in known) == sorted(kept)


def _layer_op(kind, direction):
    return getattr(torch.ops.s2s_fast, f"cpu_{kind}_layer_{direction}")


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_opcheck(kind, reverse):
    args = _layer_args(kind, 4, 3, 5, 6, dtype=torch.float32)
    values = list(args.values())
    states = 2 if kind == "lstm" else 1
    torch.library.opcheck(_layer_op(kind, "fwd"), (*values, reverse, True))
    torch.library.opcheck(_layer_op(kind, "fwd"), (*values[:3 + states], None, None, None, reverse, False))
    leaves = tuple(v.detach().requires_grad_(True) if v is not None and v.is_floating_point() else v for v in values)
    torch.library.opcheck(_layer_op(kind, "fwd"), (*leaves, reverse, True))
    results = _layer_op(kind, "fwd")(*values, reverse, True)
    output, finals, saved = results[0], results[1:1 + states], results[1 + states:]
    upstream = (torch.randn_like(output), *(torch.randn_like(f) for f in finals))
    inputs = (args["input"], args["hx"], *([args["cx"]] if kind == "lstm" else []), args["weight_ih"],
              args["weight_hh"], args["lengths"], reverse, output, *saved)
    torch.library.opcheck(_layer_op(kind, "bwd"), (*upstream, *inputs))


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_layer_torch_compile_traces_the_op_in_one_graph(kind):
    args = _layer_args(kind, 5, 3, 4, 6, dtype=torch.float32)
    op = getattr(F, f"{kind}_layer")

    def run(**a):
        output, *finals = op(**a, backend="cpu")
        return output.sum() + sum((f * f).sum() for f in finals)

    leaves = {k: v.requires_grad_(True) for k, v in args.items() if k != "lengths"}
    compiled_run = torch.compile(run, backend="aot_eager", fullgraph=True)
    eager = torch.autograd.grad(run(**args), list(leaves.values()))
    traced = torch.autograd.grad(compiled_run(**args), list(leaves.values()))
    for got, expected in zip(traced, eager):
        torch.testing.assert_close(got, expected)
    # functional's range check on lengths is an op of the graph there (no host read while tracing).
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[0, T\]"):
        compiled_run(**{**args, "lengths": torch.tensor([5, 9, 1])})


@built
def test_layer_auto_routing_and_limits():
    """Auto: the cpu LSTM layer when a gradient is recorded, aten's (oneDNN's faster forward) when none is; projections
    and other dtypes go elsewhere, and naming cpu for them says why."""
    args = _layer_args("lstm", 3, 2, 4, 5, dtype=torch.float32)
    values = tuple(args.values())
    cpu_device = torch.device("cpu")
    assert backends.resolve("lstm_layer", cpu_device, values)[0] == "aten"
    trained = tuple(v.requires_grad_(True) if k == "weight_ih" else v for k, v in args.items())
    assert backends.resolve("lstm_layer", cpu_device, trained)[0] == "cpu"
    with torch.no_grad():
        assert backends.resolve("lstm_layer", cpu_device, trained)[0] == "aten"
    gru = tuple(_layer_args("gru", 3, 2, 4, 5, dtype=torch.float32).values())
    assert backends.resolve("gru_layer", cpu_device, gru)[0] == "cpu"  # its forward is as fast as oneDNN's
    projection = torch.randn(3, 5)
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot serve lstm_layer.*projection"):
        F.lstm_layer(args["input"], args["hx"][:, :3], args["cx"], args["weight_ih"], args["weight_hh"][:, :3],
                     args["bias_ih"], args["bias_hh"], args["lengths"], weight_hr=projection, backend="cpu")
    half = tuple(v.detach().to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                 for v in trained)
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot serve lstm_layer.*bfloat16"):
        F.lstm_layer(*half, backend="cpu")


@built
def test_layer_auto_routing_follows_the_measured_cpu_training_table(monkeypatch):
    """Training calls go to aten where CPU_ATEN_FASTER_TRAINING's measured rows say oneDNN was faster (enough threads,
    batch and hidden size in range), to the cpu layer elsewhere; GRU has no row. Off Intel's CPUs LSTM training goes
    to aten but for CPU_LAYER_WIDE_INPUT's wide inputs over many rows and CPU_LAYER_PADDED's padded ones."""
    threads = torch.get_num_threads()
    cpu_device = torch.device("cpu")

    def backend_for(kind, batch, hidden, thread_count, steps=3, input_size=4, dtype=torch.float32, lengths="full"):
        torch.set_num_threads(thread_count)
        args = _layer_args(kind, steps, batch, input_size, hidden, dtype=dtype,
                           lengths=lengths if isinstance(lengths, str) else "none")
        if not isinstance(lengths, str):
            args["lengths"] = lengths
        trained = tuple(v.requires_grad_(True) if k == "weight_ih" else v for k, v in args.items())
        return backends.resolve(f"{kind}_layer", cpu_device, trained)[0]

    try:
        monkeypatch.setattr(backends, "CPU_ATEN_FASTER_TRAINING", (("lstm_layer", 2, range(5, 33), range(1, 257)),))
        assert backend_for("lstm", 8, 16, 2) == "aten"
        assert backend_for("lstm", 32, 256, 3) == "aten"
        assert backend_for("lstm", 8, 16, 1) == "cpu"  # too few threads
        assert backend_for("lstm", 4, 16, 2) == "cpu"  # batch below the row
        assert backend_for("lstm", 8, 257, 2) == "cpu"  # hidden above it
        assert backend_for("gru", 8, 16, 2) == "cpu"
        monkeypatch.setattr(backends, "CPU_ATEN_FASTER_TRAINING", ())
        assert backend_for("lstm", 8, 16, 2) == "cpu"
        # Off Intel's CPUs (MKL's GEMM far below oneDNN's there), LSTM training goes to aten at every size; GRU not.
        monkeypatch.setattr(backends, "cpu_vendor", lambda: "AuthenticAMD")
        assert backend_for("lstm", 8, 16, 1) == "aten"
        assert backend_for("lstm", 64, 512, 2) == "aten"
        assert backend_for("gru", 64, 512, 1) == "cpu"
        # But for inputs at least twice the hidden size over 2,048 rows or more (T x B), where the cpu layer's
        # float32 products go through oneDNN (its library off Intel's CPUs; conftest makes it ATen for the suite).
        monkeypatch.setattr(cpu_backend, "products_library", lambda: "onednn")
        assert backend_for("lstm", 128, 8, 1, steps=16, input_size=16) == "cpu"
        assert backend_for("lstm", 64, 8, 2, steps=32, input_size=17) == "cpu"
        assert backend_for("lstm", 128, 8, 1, steps=16, input_size=15) == "aten"  # input narrower
        assert backend_for("lstm", 127, 8, 1, steps=16, input_size=16) == "aten"  # fewer rows
        assert backend_for("lstm", 128, 8, 1, steps=16, input_size=16, dtype=torch.float64) == "aten"
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            assert backend_for("lstm", 128, 8, 1, steps=16, input_size=16) == "aten"
        finally:
            torch.backends.mkldnn.enabled = enabled
        # And for lengths leaving a sixth or more of the T x B positions padded, with 24M multiply-adds a step or more
        # (B x 4H x (I + H): 128 x 256 x 733 = 24.02M at I = 669, 23.99M at I = 668). At T = 6, rows all of length
        # 5 pad exactly a sixth; one of them of length 6, a little less.
        fifth = torch.full((128,), 5)
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=669, lengths=fifth) == "cpu"
        assert backend_for("lstm", 128, 64, 1, steps=16, input_size=669, lengths="random") == "cpu"
        one_full = fifth.index_fill(0, torch.tensor([0]), 6)
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=669, lengths=one_full) == "aten"
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=669, lengths="full") == "aten"
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=668, lengths=fifth) == "aten"  # less work
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=669, lengths=fifth, dtype=torch.float64) == "aten"
        monkeypatch.setattr(cpu_backend, "products_library", lambda: "aten")
        assert backend_for("lstm", 128, 8, 1, steps=16, input_size=16) == "aten"
        assert backend_for("lstm", 128, 64, 2, steps=6, input_size=669, lengths=fifth) == "aten"
        monkeypatch.setattr(backends, "CPU_ATEN_FASTER_TRAINING_OFF_INTEL", frozenset())
        assert backend_for("lstm", 8, 16, 1) == "cpu"
    finally:
        torch.set_num_threads(threads)


def test_step_work_counts_a_steps_multiply_adds_with_an_lstm_projections_width():
    """_step_work, the measure of auto's CPU work tables (CPU_ONEDNN_FROM_WORK's cells among them), is a step's
    multiply-adds B x gates*H x (I + R), R the recurrent input's width: an LSTM projection's P where there is one (the
    layers' tables once read H there, the cells' threshold P)."""
    batch, inputs, hidden, projected, steps = 3, 5, 7, 2, 4
    z = torch.zeros
    for width in (hidden, projected):
        cell = (z(batch, inputs), z(batch, width), z(batch, hidden), z(4 * hidden, inputs), z(4 * hidden, width))
        layer = (z(steps, batch, inputs),) + cell[1:]
        for op, args in (("lstm_cell", cell), ("lstm_layer", layer)):
            assert backends._step_work(op, args) == batch * 4 * hidden * (inputs + width), (op, width)
    gru = (z(batch, inputs), z(batch, hidden), z(3 * hidden, inputs), z(3 * hidden, hidden))
    for op, args in (("gru_cell", gru), ("gru_layer", (z(steps, batch, inputs),) + gru[1:])):
        assert backends._step_work(op, args) == batch * 3 * hidden * (inputs + hidden), op


@built
def test_cells_and_linear_go_to_cpu_in_auto_exactly_where_its_products_go_through_onednn(monkeypatch):
    """CPU_ONEDNN_FROM_WORK: auto sends float32 cells and linear to the cpu backend when its products library is
    oneDNN (the default off Intel's CPUs) and the call has the work its row asks (CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512's
    on a CPU without AVX-512), with and without a gradient; to aten (torch's own) otherwise, and for float64. Named
    explicitly, the cpu backend serves them either way."""
    cpu_device = torch.device("cpu")

    def args_of(op, dtype, rows):  # multiply-adds per row: linear 64 * 64, LSTM cell 64 * 128, GRU cell 96 * 192
        r = functools.partial(torch.empty, dtype=dtype)  # the routing reads shapes only
        if op == "linear":
            return r(rows, 64), r(64, 64), None
        if op == "lstm_cell":
            return r(rows, 32), r(rows, 32), r(rows, 32), r(128, 32), r(128, 32), None, None
        return r(rows, 32), r(rows, 64), r(192, 32), r(192, 64), None, None

    def backend_for(op, dtype, grad, rows, backend=None):
        args = args_of(op, dtype, rows)
        if grad:
            args = (args[0].requires_grad_(),) + args[1:]
        return backends.resolve(op, cpu_device, args, backend)[0]

    tables = {True: backends.CPU_ONEDNN_FROM_WORK, False: backends.CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512}
    per_row = {"linear": 64 * 64, "lstm_cell": 64 * 128, "gru_cell": 96 * 192}
    for library, avx512 in (("onednn", True), ("onednn", False), ("aten", True)):
        monkeypatch.setattr(cpu_backend, "products_library", lambda: library)
        monkeypatch.setattr(backends, "cpu_has_avx512", lambda: avx512)
        for op in per_row:
            enough = -(-tables[avx512][op] // per_row[op])  # the fewest rows with the work asked
            for grad in (False, True):
                assert backend_for(op, torch.float32, grad, enough) == ("cpu" if library == "onednn" else "aten")
                assert backend_for(op, torch.float32, grad, enough - 1) == "aten"
                assert backend_for(op, torch.float64, grad, enough) == "aten"
                assert backend_for(op, torch.float64, grad, 1, backend="cpu") == "cpu"
        if library == "onednn" and not avx512:  # the AVX-512 table's sizes go to torch's own here
            for op in per_row:
                rows = -(-backends.CPU_ONEDNN_FROM_WORK[op] // per_row[op])
                assert backend_for(op, torch.float32, True, rows) == "aten", op


@built
def test_without_avx512_large_weights_go_to_cpu_from_less_work(monkeypatch):
    """CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512: on a CPU without AVX-512, a float32 call whose weights hold the
    elements it names goes to cpu from its lower work at one torch thread, from one row at more (and under
    torch.compile, which does not read the thread count); with fewer elements the call needs
    CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512's work at any thread count."""
    monkeypatch.setattr(cpu_backend, "products_library", lambda: "onednn")
    monkeypatch.setattr(backends, "cpu_has_avx512", lambda: False)
    elements, least = backends.CPU_ONEDNN_LARGE_WEIGHTS_WITHOUT_AVX512
    empty = functools.partial(torch.empty, dtype=torch.float32)  # the routing reads shapes only
    # Each op's weights hold `outputs` x `width` elements, which are also a row's multiply-adds: linear's N x K, a
    # cell's gates*H x (I + H).
    outputs = {"linear": 1000, "lstm_cell": 4 * 250, "gru_cell": 3 * 200}

    def args_of(op, rows, width):
        if op == "linear":
            return empty(rows, width), empty(outputs[op], width), None
        hidden = outputs[op] // (4 if op == "lstm_cell" else 3)
        state = (empty(rows, hidden),) * (2 if op == "lstm_cell" else 1)
        weights = empty(outputs[op], width - hidden), empty(outputs[op], hidden)
        return (empty(rows, width - hidden), *state, *weights, None, None)

    def backend_for(op, rows, width):
        return backends.resolve(op, torch.device("cpu"), args_of(op, rows, width))[0]

    threads = torch.get_num_threads()
    try:
        for op in outputs:
            width = -(-elements // outputs[op])  # the narrowest weights with the elements asked
            rows = -(-least // (outputs[op] * width))
            few = -(-backends.CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512[op] // (outputs[op] * (width - 1)))
            torch.set_num_threads(1)
            assert [backend_for(op, rows, width), backend_for(op, rows - 1, width)] == ["cpu", "aten"], op
            for count in (2, 3):
                torch.set_num_threads(count)
                assert [backend_for(op, rows - 1, width), backend_for(op, 1, width)] == ["cpu", "cpu"], (op, count)
            for count in (1, 2):
                torch.set_num_threads(count)
                assert backend_for(op, rows, width - 1) == "aten", (op, count)
                assert [backend_for(op, few, width - 1), backend_for(op, few - 1, width - 1)] == ["cpu", "aten"], op
        # Traced (static shapes, and dynamic=True, where Dynamo still tests the sizes as ints), the thread count is
        # not read: large weights go to cpu at any size.
        torch.set_num_threads(1)
        for dynamic in (False, True):
            def route(input, weight):
                return input.sum() + (backends._cpu_onednn_pays("linear", (input, weight, None)) is True)

            compiled = torch.compile(route, fullgraph=True, dynamic=dynamic, backend="eager")
            width = -(-elements // outputs["linear"])
            for rows in (2, 3):
                assert compiled(empty(rows, width).zero_(), empty(outputs["linear"], width)).item() == 1, dynamic
                assert route(empty(rows, width).zero_(), empty(outputs["linear"], width)).item() == 0, dynamic
    finally:
        torch.set_num_threads(threads)


@built
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "linear"])
def test_cells_and_linear_match_the_reference_with_either_products_library(products, op, dtype):
    """The cpu cells (the layers' single step) and linear, forward and every gradient, with their products through
    ATen (MKL) and through oneDNN, one row and several, and empty batches and inputs; oneDNN's linear in a profile
    exactly when chosen for float32."""
    # Through oneDNN a weight's gradient copies the smaller transposed operand (csrc/cpu/products.h's
    # weight_gradient): linear's output gradient for 6 inputs, its input for 2 (the layers' tests take the second).
    for batch, input_size in ((1, 6), (5, 6), (9, 2), (0, 6), (3, 0)):
        if op == "linear":
            args = {"input": torch.randn(batch, input_size, dtype=dtype),
                    "weight": torch.randn(7, input_size, dtype=dtype), "bias": torch.randn(7, dtype=dtype)}
        else:
            gates = 4 if op == "lstm_cell" else 3
            args = {"input": torch.randn(batch, input_size, dtype=dtype), "hx": torch.randn(batch, 19, dtype=dtype)}
            if op == "lstm_cell":
                args["cx"] = torch.randn(batch, 19, dtype=dtype)
            args.update(weight_ih=torch.randn(gates * 19, input_size, dtype=dtype) / 4,
                        weight_hh=(torch.randn(19, gates * 19, dtype=dtype) / 4).t(),
                        bias_ih=torch.randn(gates * 19, dtype=dtype), bias_hh=torch.randn(gates * 19, dtype=dtype))
        compare_with_reference(functools.partial(getattr(F, op), backend="cpu"),
                               functools.partial(getattr(F, op), backend="reference"), args)
        if batch == 5:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
                getattr(F, op)(**args, backend="cpu")
            ran_onednn = any("_linear_pointwise" in event.key for event in trace.key_averages())
            assert ran_onednn == (products == "onednn" and dtype == torch.float32)


@built
@pytest.mark.parametrize("bias", [True, False])
def test_linear_opcheck_and_errors(bias):
    x, weight = torch.randn(5, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    torch.library.opcheck(torch.ops.s2s_fast.cpu_linear_fwd, (x, weight, b))
    leaves = tuple(t.clone().requires_grad_() if t is not None else None for t in (x, weight, b))
    torch.library.opcheck(torch.ops.s2s_fast.cpu_linear_fwd, leaves)
    for needs in ((True, True, bias), (False, True, False), (True, False, bias)):
        torch.library.opcheck(torch.ops.s2s_fast.cpu_linear_bwd, (torch.randn(5, 3, dtype=torch.float64), x, weight,
                                                                  *needs))
    with pytest.raises(RuntimeError, match=r"input must be \[M, K\] and weight \[N, K\]"):
        torch.ops.s2s_fast.cpu_linear_fwd(x, weight[:, :6], b)
    with pytest.raises(RuntimeError, match="float32 or float64 only"):
        torch.ops.s2s_fast.cpu_linear_fwd(x.half(), weight.half(), None)
    with pytest.raises(RuntimeError, match=r"bias must be a CPU tensor of shape \[3\]"):
        torch.ops.s2s_fast.cpu_linear_fwd(x, weight, torch.randn(4, dtype=torch.float64))


@built
def test_double_backward_of_linear_is_torchs(products):
    """create_graph=True: linear's backward then runs torch's products, so second-order gradients are right (also
    through oneDNN's forward). The kernels' second-order gradients: tests/ops/test_double_backward.py."""
    x = torch.randn(6, 5, requires_grad=True)
    weight, bias = torch.randn(4, 5, requires_grad=True), torch.randn(4, requires_grad=True)

    def penalty(backend):
        out = F.linear(x, weight, bias, backend=backend)
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), (x, weight, bias), allow_unused=True)

    for got, expected in zip(penalty("cpu"), penalty("reference")):
        assert (got is None) == (expected is None)
        if got is not None:
            torch.testing.assert_close(got, expected)


@built
def test_model_on_the_cpu_backend_compiles_in_one_graph_per_step_and_matches_eager():
    """The Seq2Seq decoder step and a training loss with every op on the cpu backend (its cells and linear
    included) trace without a graph break and give the eager results."""
    from s2s_fast.models import Seq2Seq, Seq2SeqConfig

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, embed_dim=8, hidden_size=12, dropout=0.0,
                                  backend="cpu"))
    src, lengths = torch.randint(3, 20, (3, 6)), torch.tensor([6, 4, 2])
    tgt = torch.randint(3, 20, (3, 5))
    with torch.no_grad():
        encoded = model.encode(src, lengths)
        state = model.init_state(encoded)
    step = torch.compile(model.decode_step, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for got, expected in zip(step(tgt[:, 0], state, encoded)[::2], model.decode_step(tgt[:, 0], state,
                                                                                          encoded)[::2]):
            torch.testing.assert_close(got, expected)

    def loss(model_):
        return model_(src, lengths, tgt).float().square().mean()

    expected = torch.autograd.grad(loss(model), list(model.parameters()))
    got = torch.autograd.grad(torch.compile(loss, backend="aot_eager")(model), list(model.parameters()))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_cpu_vendor_is_read_from_the_kernel():
    vendor = _CPU_VENDOR()  # the suite pins backends.cpu_vendor (conftest); this is the function that reads the CPU
    assert isinstance(vendor, str)
    if os.path.exists("/proc/cpuinfo") and platform.machine() in ("x86_64", "AMD64"):
        assert vendor and vendor == vendor.strip() and " " not in vendor  # GenuineIntel, AuthenticAMD, ...


def test_avx512_is_read_from_the_kernel_as_torch_sees_it():
    """cpu_has_avx512 (which of auto's CPU_ONEDNN_FROM_WORK tables applies) agrees with torch's own reading of the
    CPU, where torch's choice is its own (no ATEN_CPU_CAPABILITY) and it can tell (an x86 CPU under Linux): torch's
    AVX512 needs AVX512F (and BW, VL, DQ, which a CPU with F alone, a Xeon Phi, lacks)."""
    has = _CPU_HAS_AVX512()
    assert isinstance(has, bool)
    if os.path.exists("/proc/cpuinfo") and platform.machine() in ("x86_64", "AMD64") and \
            "ATEN_CPU_CAPABILITY" not in os.environ:
        torch_avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
        assert has or not torch_avx512
        if has and not torch_avx512:
            flags = backends._cpuinfo_field("flags").split()
            assert "avx512f" in flags and not all(f"avx512{part}" in flags for part in ("bw", "vl", "dq"))


@built
def test_lstm_layer_kernel_errors_are_clear():
    args = _layer_args("lstm", 3, 2, 4, 5, dtype=torch.float32)
    values = list(args.values())
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 9 is outside \[0, T\] with T = 3"):
        torch.ops.s2s_fast.cpu_lstm_layer_fwd(*values[:7], torch.tensor([1, 9]), False, False)
    with pytest.raises(RuntimeError, match="weight_hh has dtype Double but input has Float"):
        torch.ops.s2s_fast.cpu_lstm_layer_fwd(*values[:4], values[4].double(), *values[5:], False, False)
    with pytest.raises(RuntimeError, match=r"cx must have shape \[2, 5\]"):
        torch.ops.s2s_fast.cpu_lstm_layer_fwd(values[0], values[1], values[2][:, :4], *values[3:], False, False)


@built
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_layer_called_directly_without_saving_refuses_its_backward_in_words(kind):
    args = _layer_args(kind, 3, 2, 4, 5, dtype=torch.float32)
    values = [value.requires_grad_() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
              for value in args.values()]
    count = 7 if kind == "lstm" else 6
    output = getattr(torch.ops.s2s_fast, f"cpu_{kind}_layer_fwd")(*values[:count], None, False, False)[0]
    with pytest.raises(RuntimeError, match=f"{kind}_layer: its forward was called with save=False, so it kept "
                                           "nothing for the backward"):
        output.sum().backward()


@pytest.fixture(params=["aten", "onednn"])
def products(request):
    """The cpu layers' matrix products through each library (csrc/cpu/products.h), restored afterwards."""
    if request.param == "onednn" and not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    before = cpu_backend.use_products(request.param)
    assert torch.ops.s2s_fast.cpu_products() == request.param
    # Every product through the library chosen, however small (the tests' shapes are far under the default work),
    # the layers' weight gradients too (on CPUs without AVX-512 they go through ATen by default).
    work = torch.ops.s2s_fast.cpu_onednn_from_work()
    torch.ops.s2s_fast.cpu_onednn_from_work(0)
    gradients = torch.ops.s2s_fast.cpu_onednn_weight_gradients()
    torch.ops.s2s_fast.cpu_onednn_weight_gradients(True)
    yield request.param
    cpu_backend.use_products(before)
    torch.ops.s2s_fast.cpu_onednn_from_work(work)
    torch.ops.s2s_fast.cpu_onednn_weight_gradients(gradients)


@built
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("op", ["lstm_layer", "gru_layer"])
def test_layers_match_the_reference_with_either_products_library(products, op, reverse, dtype):
    """Forward and every gradient of both layers with their products through ATen (MKL) and through oneDNN (the
    default on an x86 CPU that is not Intel's, float32 only), lengths included, one row and several, and empty
    sequences, batches and inputs (oneDNN's linear refuses empty operands: they go to ATen)."""
    gates = 4 if op == "lstm_layer" else 3
    for steps, batch, input_size in ((7, 1, 6), (7, 5, 6), (0, 3, 6), (7, 0, 6), (7, 3, 0)):
        args = {"input": torch.randn(steps, batch, input_size, dtype=dtype), "hx": torch.randn(batch, 19, dtype=dtype)}
        if op == "lstm_layer":
            args["cx"] = torch.randn(batch, 19, dtype=dtype)
        # Both biases (the LSTM adds them, the GRU joins their r and z parts), weight_hh a transposed view.
        args.update(weight_ih=torch.randn(gates * 19, input_size, dtype=dtype) / 4,
                    weight_hh=(torch.randn(19, gates * 19, dtype=dtype) / 4).t(),
                    bias_ih=torch.randn(gates * 19, dtype=dtype), bias_hh=torch.randn(gates * 19, dtype=dtype))
        lengths = torch.tensor([7, 0, 3, 6, 1][:batch], dtype=torch.long).clamp(max=steps)
        for length in (None, lengths):
            compare_with_reference(functools.partial(getattr(F, op), lengths=length, reverse=reverse, backend="cpu"),
                                   functools.partial(getattr(F, op), lengths=length, reverse=reverse,
                                                     backend="reference"), args)
        if batch == 5:
            several_rows = args

    def ran_onednn() -> bool:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
            getattr(F, op)(**several_rows, backend="cpu")
        return any("_linear_pointwise" in event.key for event in trace.key_averages())

    # Which library ran: oneDNN's linear shows in the profile exactly when it was chosen, the dtype is float32 and
    # torch.backends.mkldnn is on.
    assert ran_onednn() == (products == "onednn" and dtype == torch.float32)
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        assert not ran_onednn()
    finally:
        torch.backends.mkldnn.enabled = enabled


# The weights a forward+backward call packs when its per-step products go through oneDNN in float32: a layer's
# recurrent weight forward and backward; a decoder's recurrent (the GRU's feed and hidden) weights, query and combine
# weights, forward and backward.
_PACKED_PER_CALL = {"lstm_layer": 2, "gru_layer": 2, "lstm_attention_decoder": 6, "gru_attention_decoder": 8}


@built
@pytest.mark.parametrize("op", sorted(_PACKED_PER_CALL))
def test_float32_per_step_products_through_onednn_read_each_weight_packed_once(products, op):
    """Through oneDNN in float32, the per-step products of a layer and a decoder read each weight they repeat packed
    once per call (mkldnn::_reorder_linear_weight) where a step has cpu_packed_float32_from_rows rows or more (2 by
    default), else the plain weight, which oneDNN reads faster at one row; never through ATen. Forward and every
    gradient match the reference either way, a layer whose last steps run one row included. The threshold is
    checked, and moved it moves the route."""
    from_rows = torch.ops.s2s_fast.cpu_packed_float32_from_rows()
    assert from_rows == 2
    with pytest.raises(RuntimeError, match="rows must be >= 0"):
        torch.ops.s2s_fast.cpu_packed_float32_from_rows(-1)

    def packs(args):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
            forward_backward(functools.partial(getattr(F, op), backend="cpu"), args)
        names = [event.name for event in trace.events()]
        assert ("mkldnn::_linear_pointwise" in names) == (products == "onednn")
        return names.count("mkldnn::_reorder_linear_weight")

    onednn = products == "onednn"
    try:
        for rows in (None, 1, "last one"):
            args = _bf16_args(op)
            if rows == 1:  # the first row of every per-row argument (dim 1 of the time-major ones)
                shared = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "query_weight", "v", "combine_weight")
                args = {name: value if not isinstance(value, torch.Tensor) or name in shared else
                        value[:, :rows] if name in ("input", "dropout_mask") else value[:rows]
                        for name, value in args.items()}
            elif rows == "last one":  # a layer whose last steps run one row: one Product reads both weights
                if not op.endswith("layer"):
                    continue
                args["lengths"] = torch.tensor([9, 4, 0, 2, 7, 1])
            # The default (2 rows), every product packed (1), none (past any batch): each matches the reference.
            for setting, packing in ((from_rows, rows != 1), (1, True), (1000, False)):
                torch.ops.s2s_fast.cpu_packed_float32_from_rows(setting)
                compare_with_reference(functools.partial(getattr(F, op), backend="cpu"),
                                       functools.partial(getattr(F, op), backend="reference"), args)
                assert packs(args) == (_PACKED_PER_CALL[op] if onednn and packing else 0), (rows, setting)
    finally:
        torch.ops.s2s_fast.cpu_packed_float32_from_rows(from_rows)


@built
def test_products_under_the_work_threshold_stay_with_aten():
    """oneDNN's linear costs more per call than MKL's GEMM: products under cpu_onednn_from_work multiply-adds go to
    ATen even where oneDNN is chosen, larger ones to oneDNN; the threshold is checked."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    before = cpu_backend.use_products("onednn")
    work = torch.ops.s2s_fast.cpu_onednn_from_work()
    try:
        assert work == 2_000_000
        with pytest.raises(RuntimeError, match="work must be >= 0"):
            torch.ops.s2s_fast.cpu_onednn_from_work(-1)
        weight = torch.randn(64, 64)

        def ran_onednn(rows) -> bool:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
                F.linear(torch.randn(rows, 64), weight, backend="cpu")
            return any("_linear_pointwise" in event.key for event in trace.key_averages())

        assert ran_onednn(489) and not ran_onednn(488)  # 489 * 64 * 64 >= 2M > 488 * 64 * 64
        torch.ops.s2s_fast.cpu_onednn_from_work(0)
        assert ran_onednn(1)
    finally:
        cpu_backend.use_products(before)
        torch.ops.s2s_fast.cpu_onednn_from_work(work)


@built
def test_the_product_routes_benchmark_compiles_against_products_h(tmp_path):
    """benchmarks/cpu_product_routes.py compiles its C++ loop against csrc/cpu/products.h (load_inline, a minute); a
    rename in products.h broke it once unnoticed. Checked here with the host compiler's syntax-only pass, with the
    language mode and include paths load_inline gives it."""
    import importlib.util
    import shutil
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        pytest.skip(f"no C++ compiler ({compiler})")
    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("cpu_product_routes", root / "benchmarks" / "cpu_product_routes.py")
    routes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(routes)
    source = tmp_path / "routes.cpp"
    source.write_text("#include <torch/extension.h>\n" + routes.SOURCE)
    # load_inline's language mode and Python include path (torch's cpp_extension, torch 2.13).
    python_include = sysconfig.get_path("include", "posix_prefix") if os.name == "posix" else sysconfig.get_path(
        "include")
    result = subprocess.run([compiler, "-std=c++20", "-fsyntax-only", "-w", f"-I{root / 'csrc' / 'cpu'}",
                             *[f"-I{path}" for path in include_paths()], f"-I{python_include}", str(source)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _cpu_flags() -> set:
    """The CPU's flags as /proc/cpuinfo lists them (empty where there is none)."""
    if not os.path.exists("/proc/cpuinfo"):
        return set()
    with open("/proc/cpuinfo") as cpuinfo:
        return next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())


@built
@pytest.mark.parametrize("op", ["lstm_layer", "gru_layer", "linear"])
def test_layer_weight_gradients_through_onednn_only_where_the_setting_says(op):
    """Through oneDNN in float32, a layer's weight gradients (and linear's) go through oneDNN's linear while
    cpu_onednn_weight_gradients is on, through ATen's GEMM while it is off, with the same gradients; its default is
    on exactly on CPUs with AVX-512 (AVX512F), where oneDNN ran them faster than MKL (csrc/cpu/products.h)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    work, default = torch.ops.s2s_fast.cpu_onednn_from_work(), torch.ops.s2s_fast.cpu_onednn_weight_gradients()
    before = cpu_backend.use_products("onednn")
    torch.ops.s2s_fast.cpu_onednn_from_work(0)
    try:
        if op == "linear":
            args = {"input": torch.randn(5, 6), "weight": torch.randn(7, 6), "bias": torch.randn(7)}
        else:
            args = _bf16_args(op)
        runs = {}
        for through in (True, False):
            assert torch.ops.s2s_fast.cpu_onednn_weight_gradients(through) == through
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
                runs[through] = forward_backward(functools.partial(getattr(F, op), backend="cpu"), args)
            names = [event.name for event in trace.events()]
            runs[through] += (names.count("mkldnn::_linear_pointwise"), names.count("aten::mm"))
        # Two weight gradients for a layer, one for linear, move from oneDNN's linear to at::mm; nothing else moves.
        moved = 1 if op == "linear" else 2
        assert runs[False][3] == runs[True][3] - moved and runs[False][4] == runs[True][4] + moved
        # The same gradients either way (each route against the reference: the tests under the `products` fixture,
        # which turns this setting on, and tests/ops, which keeps the machine's default).
        for name, grad in runs[True][1].items():
            if grad is not None:
                torch.testing.assert_close(runs[False][1][name], grad, rtol=1e-5, atol=1e-5, msg=name)
    finally:
        cpu_backend.use_products(before)
        torch.ops.s2s_fast.cpu_onednn_from_work(work)
        torch.ops.s2s_fast.cpu_onednn_weight_gradients(default)
    # The default, as every test that changes it restores it.
    if platform.machine() not in ("x86_64", "AMD64", "i386", "i686"):
        assert not default
    elif os.path.exists("/proc/cpuinfo"):
        assert default == ("avx512f" in _cpu_flags())


@built
def test_products_choice_is_checked_and_defaults_by_cpu_vendor():
    """s2s_fast::cpu_products names its library, refuses another name, and defaults to oneDNN exactly on x86 CPUs
    that are not Intel's (where MKL's float32 GEMM is slow) when torch has oneDNN."""
    with pytest.raises(RuntimeError, match="choose"):
        torch.ops.s2s_fast.cpu_products("mkl")
    script = "import torch, s2s_fast\nprint(torch.ops.s2s_fast.cpu_products())"
    default = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                             timeout=120).stdout.strip()
    vendor = _CPU_VENDOR()  # the function that reads the CPU (conftest pins backends.cpu_vendor)
    if not vendor:
        pytest.skip("the CPU's vendor is unknown here (no /proc/cpuinfo)")
    x86 = platform.machine() in ("x86_64", "AMD64", "i386", "i686")
    expected = "onednn" if x86 and vendor != "GenuineIntel" and torch.backends.mkldnn.is_available() else "aten"
    assert default == expected


def _bf16_errors(op, args):
    """(error of the cpu op with its products in bfloat16, error of the reference run in bfloat16, error of the cpu op
    in float32), each against the float64 reference on the same float32 inputs, per output and input gradient."""
    from s2s_fast.testing import relative_error

    def cast(to):
        return {k: v.to(to) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in args.items()}

    exact_out, exact_grads, upstream = forward_backward(functools.partial(op, backend="reference"), cast(torch.float64))
    runs = {}
    for name, dtype, backend, force in (("bf16", torch.float32, "cpu", "always"),
                                        ("reference", torch.bfloat16, "reference", "always"),
                                        ("float32", torch.float32, "cpu", "never")):
        cpu_backend.force_bf16_products(force)
        runs[name] = forward_backward(functools.partial(op, backend=backend), cast(dtype),
                                      upstream=[g.to(dtype) for g in upstream])
    cpu_backend.force_bf16_products("always")
    names = [f"output {i}" for i in range(len(exact_out))] + [n for n, g in exact_grads.items() if g is not None]
    exact = list(exact_out) + [g for g in exact_grads.values() if g is not None]
    errors = {name: [relative_error(value, expected) for value, expected in
                     zip(list(out) + [grads[n] for n, g in exact_grads.items() if g is not None], exact)]
              for name, (out, grads, _) in runs.items()}
    return names, errors


def _bf16_args(op):
    """The arguments the bfloat16 tests call `op` with (F's names): small sizes, a mask and dropout for the decoders,
    lengths for the layers."""
    torch.manual_seed(0)
    if op == "linear":
        args = {"input": torch.randn(9, 40), "weight": torch.randn(24, 40) / 40 ** 0.5, "bias": torch.randn(24)}
    elif op.endswith("decoder"):
        gates, (steps, batch, embed, hidden, keys, attn) = (4 if op.startswith("lstm") else 3), (6, 5, 12, 16, 7, 10)
        w = lambda *shape: torch.randn(*shape) / shape[-1] ** 0.5  # noqa: E731
        args = dict(input=torch.randn(steps, batch, embed), hx=torch.randn(batch, hidden))
        if gates == 4:
            args["cx"] = torch.randn(batch, hidden)
        args.update(feed=torch.randn(batch, hidden), weight_ih=w(gates * hidden, embed + hidden),
                    weight_hh=w(gates * hidden, hidden), bias_ih=torch.randn(gates * hidden),
                    bias_hh=torch.randn(gates * hidden), query_weight=w(attn, hidden),
                    key_proj=torch.randn(batch, keys, attn), v=w(attn), values=torch.randn(batch, keys, hidden),
                    mask=torch.rand(batch, keys) > 0.3, combine_weight=w(hidden, 2 * hidden),
                    dropout_mask=(torch.rand(steps, batch, hidden) > 0.3).float() / 0.7)
        args["mask"][:, 0] = True
    else:
        gates, layer = (4 if op.startswith("lstm") else 3), op.endswith("layer")
        steps, batch, input_size, hidden = 9, 6, 24, 20
        w = lambda *shape: torch.randn(*shape) / shape[-1] ** 0.5  # noqa: E731
        args = {"input": torch.randn(steps, batch, input_size) if layer else torch.randn(batch, input_size),
                "hx": torch.randn(batch, hidden)}
        if gates == 4:
            args["cx"] = torch.randn(batch, hidden)
        args.update(weight_ih=w(gates * hidden, input_size), weight_hh=w(gates * hidden, hidden),
                    bias_ih=torch.randn(gates * hidden), bias_hh=torch.randn(gates * hidden))
        if layer:
            args["lengths"] = torch.tensor([9, 4, 0, 9, 7, 1])
    return args


@built
@pytest.mark.parametrize("op", ["lstm_layer", "gru_layer", "lstm_cell", "gru_cell", "linear",
                                "lstm_attention_decoder", "gru_attention_decoder"])
def test_products_in_bfloat16_are_as_accurate_as_bfloat16_allows(bf16_products, op):
    """With the products in bfloat16 (torch's switch for float32 products on oneDNN, forced here on any CPU that can
    run them), every product of the cpu kernels rounds its operands: each output and input gradient is off the
    float64 reference by at most
    LOW_PRECISION_ERROR_RATIO times the reference run wholly in bfloat16, plus bfloat16's unit; the first output and
    the weights' gradients are off by more than in float32 (so the products did run in bfloat16)."""
    from s2s_fast.testing import LOW_PRECISION_ERROR_RATIO

    args = _bf16_args(op)
    names, errors = _bf16_errors(getattr(F, op), args)
    # Every product the cpu op ran, forward and backward (the weight gradients' too), took bfloat16 operands.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as trace:
        forward_backward(functools.partial(getattr(F, op), backend="cpu"), args)
    products = [event for event in trace.events()
                if event.name in ("aten::mm", "aten::addmm", "aten::matmul", "mkldnn::_linear_pointwise")]
    assert products and all(event.input_dtypes[:2] == ["c10::BFloat16"] * 2 for event in products), \
        [(event.name, event.input_dtypes[:2]) for event in products]
    unit = 2.0 ** -8
    for name, bf16, reference, float32 in zip(names, errors["bf16"], errors["reference"], errors["float32"]):
        assert bf16 <= LOW_PRECISION_ERROR_RATIO * reference + unit, (name, bf16, reference)
        if name == "output 0" or name.startswith("weight"):  # products' results (linear's bias gradient is a sum)
            assert bf16 > 4 * float32, (name, bf16, float32)


@built
@pytest.mark.parametrize("op", ["lstm_layer", "gru_layer", "lstm_attention_decoder", "gru_attention_decoder"])
def test_a_backward_rounds_its_gate_gradients_once_for_all_its_products(bf16_products, op):
    """In bfloat16, a backward reads its gate gradients (and a decoder its query gradients) in each step's product and
    again in the input and weight gradients after the steps: each row is rounded once (csrc/cpu/products.h's
    LeftRows), where each of those products rounded them anew. With lengths a layer rounds its running rows only."""
    args = _bf16_args(op)
    leaves = {name: value.clone().requires_grad_() if isinstance(value, torch.Tensor) and value.is_floating_point()
              else value for name, value in args.items()}
    outputs = getattr(F, op)(**leaves, backend="cpu")
    loss = sum((output * torch.randn_like(output)).sum() for output in outputs if output.requires_grad)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as trace:
        loss.backward()
    rounded = collections.Counter()  # rows rounded to bfloat16, by width
    for event in trace.events():
        if event.name == "aten::copy_" and event.input_dtypes[:2] == ["c10::BFloat16", "float"]:
            rounded[event.input_shapes[0][-1]] += math.prod(event.input_shapes[0][:-1])
    steps, batch, width = args["input"].shape
    hidden = args["hx"].shape[1]
    gates = (4 if op.startswith("lstm") else 3) * hidden
    if op.endswith("layer"):
        # Counted by width: the gate gradients' differs from those of the other operands rounded (input, h, weights).
        assert gates not in (width, hidden)
        running = int(args["lengths"].sum())  # the GRU has two gate gradients, the input gates' read after the steps
        assert rounded[gates] == running * (2 if op == "gru_layer" else 1), rounded
    else:
        attn = args["query_weight"].shape[0]
        assert len({gates, attn, width, hidden, width + hidden, width + 2 * hidden, 2 * hidden}) == 7
        assert rounded[gates] == steps * batch * (2 if op == "gru_attention_decoder" else 1), rounded
        assert rounded[attn] == steps * batch, rounded  # the query gradients


def _products_ran(call):
    """(name, dtype of the left operand) of each product the call ran, and how many weights it packed for oneDNN."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as trace:
        call()
    events = trace.events()
    products = [(event.name, event.input_dtypes[0]) for event in events
                if event.name in ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")]
    return products, sum(event.name == "mkldnn::_reorder_linear_weight" for event in events)


@pytest.fixture
def bf16_by_size():
    """Float32 products in bfloat16 forced on (any CPU that can run them), at one thread, float32 ones through ATen
    (oneDNN is the default off Intel's CPUs), with the default thresholds: the size rules of csrc/cpu/products.h
    decide; all restored afterwards."""
    try:
        cpu_backend.force_bf16_products("always")
    except RuntimeError as error:
        pytest.skip(str(error))
    threads, library = torch.get_num_threads(), cpu_backend.use_products("aten")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    cpu_backend.use_products(library)
    cpu_backend.force_bf16_products("torch")


@built
def test_products_run_in_bfloat16_only_where_the_rounding_pays(bf16_by_size):
    """A product whose weight is rounded for it alone (F.linear's) runs in bfloat16 from cpu_bf16_from_work
    multiply-adds per thread and 48 rows; smaller ones stay float32, through ATen or, where it is the library and the
    work is large enough, oneDNN. The threshold is checked and settable, 0 sending every product to bfloat16."""
    work = torch.ops.s2s_fast.cpu_bf16_from_work()
    assert work == 2_000_000
    with pytest.raises(RuntimeError, match="work must be >= 0"):
        torch.ops.s2s_fast.cpu_bf16_from_work(-1)
    bf16, float32 = [("mkldnn::_linear_pointwise", "c10::BFloat16")], [("aten::mm", "float")]

    def products(rows, width):
        weight = torch.randn(width, width)
        return _products_ran(lambda: F.linear(torch.randn(rows, width), weight, backend="cpu"))[0]

    assert products(489, 64) == bf16 and products(488, 64) == float32  # 489 * 64 * 64 >= 2M > 488 * 64 * 64
    assert products(48, 1024) == bf16 and products(47, 1024) == float32  # 47 * 1024 * 1024 >= 2M, but 47 rows
    if torch.backends.mkldnn.is_available():  # float32 through oneDNN where it is the library (off Intel's CPUs)
        before = cpu_backend.use_products("onednn")
        try:
            assert products(47, 1024) == [("mkldnn::_linear_pointwise", "float")]
            weight, x = torch.randn(1024, 1024), torch.randn(47, 1024)
            torch.testing.assert_close(F.linear(x, weight, backend="cpu"), x @ weight.t(), rtol=1e-4, atol=1e-4)
        finally:
            cpu_backend.use_products(before)
    try:
        torch.ops.s2s_fast.cpu_bf16_from_work(0)
        assert products(1, 64) == bf16
    finally:
        torch.ops.s2s_fast.cpu_bf16_from_work(work)


@built
def test_a_weight_gradient_runs_in_bfloat16_from_128_rows_per_thread(bf16_by_size):
    """A weight's gradient grad^T @ x rounds both its operands for its outputs: it runs in bfloat16 from 128 rows per
    torch thread (and cpu_bf16_from_work's work), float32 below."""

    def gradient_dtype(rows):
        weight = torch.randn(512, 512, requires_grad=True)
        output = F.linear(torch.randn(rows, 512), weight, backend="cpu")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as trace:
            output.backward(torch.ones_like(output))
        return [event.input_dtypes[0] for event in trace.events()
                if event.name == "aten::mm" and event.input_shapes[0] == [512, rows]]

    assert gradient_dtype(128) == ["c10::BFloat16"] and gradient_dtype(127) == ["float"]
    torch.set_num_threads(2)  # the fixture puts one back
    assert gradient_dtype(256) == ["c10::BFloat16"] and gradient_dtype(255) == ["float"]


@built
@pytest.mark.parametrize("batch, hidden, bf16_steps", [(8, 256, True), (7, 256, False), (1, 512, True)])
def test_a_layers_step_products_pack_their_weight_once_where_bfloat16_pays(bf16_by_size, batch, hidden, bf16_steps):
    """A layer's per-step products h @ weight_hh^T share one weight packed for oneDNN: they run in bfloat16 from
    cpu_bf16_from_work multiply-adds per thread (B = 8, H = 256: 2.1M) or with a weight of 1M elements (H = 512), and
    the weight is packed only when they do; its input product, used once, from 48 rows (T x B) as well. The output
    stays as accurate as bfloat16 allows."""
    steps = 6
    args = _layer_args("lstm", steps, batch, hidden, hidden, dtype=torch.float32, lengths="none")
    args["weight_hh"].requires_grad_()  # a training call: inference ones keep their weights across calls (below)
    products, packed = _products_ran(lambda: F.lstm_layer(**args, backend="cpu"))
    step_products = products[1:]  # after the input product, one per step
    assert len(step_products) == steps, products
    bf16 = ("mkldnn::_linear_pointwise", "c10::BFloat16")
    # The input product [T B, H] x [H, 4H]: 48 rows at B = 8 (12.6M), 42 at B = 7, 6 at B = 1.
    assert products[0] in ([bf16] if steps * batch >= 48 else [("aten::mm", "float"), ("aten::addmm", "float")])
    assert step_products == [bf16 if bf16_steps else ("aten::mm", "float")] * steps
    assert packed == (1 if bf16_steps else 0)  # once for all the steps
    output = F.lstm_layer(**args, backend="cpu")[0]
    exact = F.lstm_layer(**{k: v.detach().double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                            for k, v in args.items()}, backend="reference")[0]
    assert (output.double() - exact).abs().max() < 0.05


@built
@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "lstm_layer", "gru_layer"])
def test_inference_calls_keep_their_packed_weights_for_the_next(bf16_by_size, op):
    """A cpu layer's or cell's call that keeps nothing for a backward (inference: a decoder's cell at every step of a
    search) records its weights; from the next call on, its products route as packed ones and keep their packed
    bfloat16 weights for the calls after (csrc/cpu/products.h's KeptWeights). A weight updated in place (through
    .data too) is met anew, and its new values are used; clear_kept_weights drops them all; fresh weights (which may
    land where freed ones were) are met anew; a call that records a gradient does not take the kept ones. (A layer's
    per-step product packs weight_hh at its first call anyway, for its steps.)"""
    gates = 4 if op.startswith("lstm") else 3
    batch, input_size, hidden = 8, 576, 384  # under 48 rows and 1M-element weights: a first meeting stays float32
    layer = op.endswith("layer")

    def weights():
        return {"weight_ih": torch.randn(gates * hidden, input_size) / input_size ** 0.5,
                "weight_hh": torch.randn(gates * hidden, hidden) / hidden ** 0.5,
                "bias_ih": torch.randn(gates * hidden)}

    state = {"input": torch.randn(*((3,) if layer else ()), batch, input_size), "hx": torch.randn(batch, hidden)}
    if gates == 4:
        state["cx"] = torch.randn(batch, hidden)
    call = functools.partial(getattr(F, op), backend="cpu")
    exact = functools.partial(getattr(F, op), backend="reference")

    def packs(args):
        """The weights one call packs; its output checked against float64 with the weights' current values."""
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as trace:
            output = call(**args)[0]
        expected = exact(**{name: value.double() for name, value in args.items()})[0]
        assert (output.double() - expected).abs().max() < 0.05  # bfloat16's error
        return sum(event.name == "mkldnn::_reorder_linear_weight" for event in trace.events())

    step = 1 if layer else 0  # what a layer's per-step product packs at a first meeting of weight_hh
    args = {**state, **weights()}
    assert [packs(args) for _ in range(3)] == [step, 2 - step, 0]
    with torch.no_grad():
        args["weight_ih"].add_(0.05)  # moves the gates by about 1: the old packed weight would be off by that
    assert [packs(args) for _ in range(2)] == [0, 1]  # weight_hh still kept
    args["weight_hh"].data.mul_(1.5)  # through .data its version stays: seen in the sample of its values
    assert [packs(args) for _ in range(2)] == [step, 1 - step]
    assert cpu_backend.clear_kept_weights() >= 2
    assert [packs(args) for _ in range(3)] == [step, 2 - step, 0]
    for _ in range(3):
        assert packs({**state, **weights()}) == step
    assert cpu_backend.keep_weights() and not cpu_backend.keep_weights(False)
    try:
        assert [packs(args) for _ in range(2)] == [step, step]  # nothing kept: each call as a first meeting
    finally:
        cpu_backend.keep_weights(True)
    # Recording a gradient, a layer packs weight_hh for its steps (not a kept one), a cell packs none (its products
    # round their weights at the call).
    trained = {name: value.requires_grad_() if name.startswith("weight") else value for name, value in args.items()}
    assert _products_ran(lambda: call(**trained))[1] == step


@built
def test_products_in_bfloat16_follow_torchs_switch_where_the_cpu_has_them():
    """By default the cpu kernels' float32 products run in bfloat16 exactly while torch's switch for float32 products
    on oneDNN asks for bfloat16 (torch.set_float32_matmul_precision("medium") sets it) on a CPU with bfloat16 products
    in hardware; "never" and "always" override it, and another word is refused."""
    hardware = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        assert not cpu_backend.bf16_products()
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        assert cpu_backend.bf16_products() == hardware
        cpu_backend.force_bf16_products("never")
        assert not cpu_backend.bf16_products()
        torch.backends.mkldnn.matmul.fp32_precision = "ieee"
        try:
            cpu_backend.force_bf16_products("always")
        except RuntimeError as error:
            assert "cannot run bfloat16 products" in str(error)
        else:
            assert cpu_backend.bf16_products()
        with pytest.raises(RuntimeError, match='force "torch", "always" or "never"'):
            cpu_backend.force_bf16_products("sometimes")
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            assert not cpu_backend.bf16_products()  # no products through oneDNN at all
        finally:
            torch.backends.mkldnn.enabled = enabled
    finally:
        cpu_backend.force_bf16_products("torch")
        torch.backends.mkldnn.matmul.fp32_precision = before
    assert not cpu_backend.bf16_products()


@built
def test_auto_sends_large_lstm_inference_to_cpu_while_its_products_run_in_bfloat16(monkeypatch):
    """CPU_BF16_INFERENCE_PREFERS_CPU: auto tries aten first for LSTM layer calls that record no gradient, but for
    float32 ones with the work per step and torch thread the rule asks while the cpu backend's products run in
    bfloat16, on any CPU vendor; float64, smaller calls and more threads per call keep aten, as does tracing under
    torch.compile (not tested here)."""
    cpu_device = torch.device("cpu")
    monkeypatch.setattr(backends, "CPU_BF16_INFERENCE_PREFERS_CPU", {"lstm_layer": 8 * 64 * 20})  # B x 4H x (I + H)

    def backend_for(dtype=torch.float32, batch=8):
        args = tuple(_layer_args("lstm", 3, batch, 4, 16, dtype=dtype, lengths="none").values())
        return backends.resolve("lstm_layer", cpu_device, args)[0]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(backends, "_cpu_bf16_products", lambda: False)
        assert backend_for() == "aten"
        monkeypatch.setattr(backends, "_cpu_bf16_products", lambda: True)
        for vendor in ("GenuineIntel", "AuthenticAMD"):
            monkeypatch.setattr(backends, "cpu_vendor", lambda: vendor)
            assert backend_for() == "cpu"
            assert backend_for(batch=7) == "aten"
            assert backend_for(torch.float64) == "aten"
        torch.set_num_threads(2)
        if torch.get_num_threads() == 2:  # the work is per thread: two threads ask for twice as much
            assert backend_for() == "aten" and backend_for(batch=16) == "cpu"
    finally:
        torch.set_num_threads(threads)


@built
@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell"])
def test_auto_sends_cell_inference_to_cpu_while_its_products_run_in_bfloat16(monkeypatch, op):
    """CPU_BF16_INFERENCE_PREFERS_CPU's cells: where the cpu backend's products go through ATen (Intel's CPUs) auto
    leaves cpu out for the cells (CPU_ONEDNN_FROM_WORK), but for float32 calls that record no gradient while its
    products run in bfloat16 (its packed weights kept across calls), at any size; a call that records a gradient, and
    float64, keep aten."""
    cpu_device = torch.device("cpu")
    monkeypatch.setattr(backends, "_cpu_products_through_onednn", lambda dtype, compiling=False: False)
    gates = 4 if op == "lstm_cell" else 3

    def backend_for(grad=False, dtype=torch.float32):
        args = {"input": torch.randn(1, 4, dtype=dtype), "hx": torch.randn(1, 16, dtype=dtype)}
        if gates == 4:
            args["cx"] = torch.randn(1, 16, dtype=dtype)
        args.update(weight_ih=torch.randn(gates * 16, 4, dtype=dtype, requires_grad=grad),
                    weight_hh=torch.randn(gates * 16, 16, dtype=dtype), bias_ih=None, bias_hh=None)
        return backends.resolve(op, cpu_device, tuple(args.values()))[0]

    monkeypatch.setattr(backends, "_cpu_bf16_products", lambda: False)
    assert backend_for() == "aten"
    monkeypatch.setattr(backends, "_cpu_bf16_products", lambda: True)
    assert backend_for() == "cpu"
    assert backend_for(grad=True) == "aten" and backend_for(dtype=torch.float64) == "aten"


@built
def test_auto_sends_lstm_training_to_cpu_while_its_products_run_in_bfloat16(monkeypatch):
    """CPU_BF16_PREFERS_CPU: off Intel's CPUs auto tries aten first for float32 LSTM layers but for training calls
    with the work per step the rule asks while the cpu backend's products run in bfloat16, where its layers were
    measured faster; inference, float64, smaller calls and Intel's CPUs keep their rules."""
    cpu_device = torch.device("cpu")
    monkeypatch.setattr(backends, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(backends, "CPU_BF16_PREFERS_CPU", {"lstm_layer": 8 * 64 * 20})  # B x 4H x (I + H)

    def backend_for(grad, dtype=torch.float32, batch=8):
        args = _layer_args("lstm", 3, batch, 4, 16, dtype=dtype, lengths="none")
        args = tuple(v.requires_grad_(grad) if k == "weight_ih" else v for k, v in args.items())
        return backends.resolve("lstm_layer", cpu_device, args)[0]

    assert backend_for(True) == backend_for(False) == "aten"
    monkeypatch.setattr(backends, "_cpu_bf16_products", lambda: True)
    assert backend_for(True) == "cpu"
    assert backend_for(False) == "aten"
    assert backend_for(True, batch=7) == "aten"
    assert backend_for(True, torch.float64) == "aten"
    monkeypatch.setattr(backends, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(backends, "CPU_ATEN_FASTER_TRAINING", (("lstm_layer", 1, range(1, 33), range(1, 257)),))
    assert backend_for(True) == "aten"
