"""The Triton backend against the reference: every op, forward and every gradient, on awkward shapes.

Without a CUDA GPU the kernels run on the CPU through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before they are defined), so shapes stay small. Tests marked gpu add half precision,
torch.compile and autocast; they skip without a GPU.
"""

import collections
import contextlib
import functools

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import s2s_fast  # noqa: E402
from s2s_fast import backends, reference  # noqa: E402
from s2s_fast import functional as F  # noqa: E402
from s2s_fast.testing import LOW_PRECISION_ERROR_RATIO, compare_with_reference, forward_backward, poison_, \
    relative_error  # noqa: E402
from s2s_fast.triton.utils import wait_for_batch_tile  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_reason = backends.unavailable_reason("triton", DEVICE)
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"triton backend unavailable: {_reason}")


@pytest.fixture
def poisoned_allocations(monkeypatch):
    """Fill every tensor allocated through torch.empty/empty_like with NaN, so an element no kernel writes shows."""
    empty, empty_like = torch.empty, torch.empty_like
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poison_(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poison_(empty_like(*args, **kwargs)))


@pytest.fixture(params=["persistent", "per_step"])
def layer_schedule(request, monkeypatch):
    """Run the Triton RNN layers, through auto's own choice, in each of their two unspread schedules (on a GPU the
    default would be the spread one: test_rnn_layer_spread_* run that)."""
    from s2s_fast.triton import utils

    monkeypatch.setattr(utils, "spread_by_default", lambda input, hx: False)
    monkeypatch.setattr(utils, "PERSISTENT_MAX_WEIGHT_BYTES", 2**62 if request.param == "persistent" else -1)
    return request.param


def _strided(tensor):
    """The same values in a non-contiguous layout (last two axes column-major, vectors with stride 2)."""
    if tensor.dim() == 1:
        return torch.stack([tensor, tensor], dim=1)[:, 0]
    return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)


def _with_strided_inputs(fn, names):
    def run(**kwargs):
        return fn(**{k: (_strided(v) if k in names and v is not None else v) for k, v in kwargs.items()})

    return run


def _attention_inputs(batch, queries, keys, attn, dv, empty_rows=(), dtype=torch.float32, masked=True):
    query_shape = (batch, attn) if queries is None else (batch, queries, attn)
    mask = None
    if masked:
        mask = torch.rand(batch, keys, device=DEVICE) > 0.3
        mask[:, 0] = True
        for row in empty_rows:
            mask[row] = False
    return dict(query_proj=torch.randn(query_shape, device=DEVICE, dtype=dtype),
                key_proj=torch.randn(batch, keys, attn, device=DEVICE, dtype=dtype),
                v=torch.randn(attn, device=DEVICE, dtype=dtype) * attn ** -0.5,
                values=torch.randn(batch, keys, dv, device=DEVICE, dtype=dtype), mask=mask)


def _uniform(*shape, bound, dtype):
    return (torch.rand(*shape, device=DEVICE, dtype=dtype) * 2 - 1) * bound


def _rnn_inputs(gates, batch, input_size, hidden, bias=True, steps=None, cell_state=True, dtype=torch.float32):
    """Inputs of a cell (steps None) or layer call, weights drawn like torch.nn's initialisation."""
    bound = hidden ** -0.5
    input_shape = (batch, input_size) if steps is None else (steps, batch, input_size)
    inputs = dict(input=torch.randn(input_shape, device=DEVICE, dtype=dtype),
                  hx=torch.randn(batch, hidden, device=DEVICE, dtype=dtype))
    if cell_state:
        inputs["cx"] = torch.randn(batch, hidden, device=DEVICE, dtype=dtype)
    inputs.update(weight_ih=_uniform(gates * hidden, input_size, bound=bound, dtype=dtype),
                  weight_hh=_uniform(gates * hidden, hidden, bound=bound, dtype=dtype),
                  bias_ih=_uniform(gates * hidden, bound=bound, dtype=dtype) if bias else None,
                  bias_hh=_uniform(gates * hidden, bound=bound, dtype=dtype) if bias else None)
    return inputs


@pytest.mark.parametrize("batch,queries,keys,attn,dv,empty_rows", [
    (3, None, 37, 17, 5, (1,)),  # one query per row (a decoder step), an empty mask row
    (1, 1, 1, 1, 1, ()),  # every size 1
    (2, 5, 37, 17, 3, (0,)),
    (2, 19, 23, 33, 4, (1,)),  # several query tiles (d key_proj summed over them) and A chunks
])
def _saved_bytes(fn, inputs):
    """Sizes (numel) of the tensors autograd keeps for backward while ``fn`` runs, and their total bytes."""
    sizes, total = [], 0

    def pack(tensor):
        nonlocal total
        sizes.append(tensor.numel())
        total += tensor.numel() * tensor.element_size()
        return tensor

    leaves = {k: (v.clone().requires_grad_() if v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(**leaves)
    return sizes, total


def test_fused_attention_saves_no_four_dimensional_tensor():
    batch, queries, keys, attn, dv = 2, 8, 16, 32, 4
    inputs = _attention_inputs(batch, queries, keys, attn, dv)
    four_d = batch * queries * keys * attn
    fused_sizes, fused_bytes = _saved_bytes(functools.partial(F.additive_attention, backend="triton"), inputs)
    reference_sizes, reference_bytes = _saved_bytes(reference.additive_attention, inputs)
    assert max(reference_sizes) >= four_d, "the reference should keep its [B, Tq, Tk, A] tanh tensor"
    assert max(fused_sizes) < four_d, f"fused attention saved a tensor of {max(fused_sizes)} elements"
    # Inputs (the mask too, for a double backward) plus the O(B*Tq*Tk) weights, nothing more.
    inputs_numel = sum(t.numel() for t in inputs.values() if t is not None)
    assert sum(fused_sizes) <= inputs_numel + batch * queries * keys
    assert fused_bytes * 4 < reference_bytes


@pytest.mark.parametrize("steps,batch,input_size,hidden,lengths", [
    (1, 1, 3, 5, None),
    (1, 2, 3, 4, [0, 1]),
    (5, 4, 3, 6, [5, 1, 0, 3]),
    (4, 17, 9, 33, None),  # two batch tiles and two hidden tiles
])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_matches_reference(poisoned_allocations, layer_schedule, kind, steps, batch, input_size, hidden,
                                     lengths, reverse):
    inputs = _rnn_inputs(4 if kind == "lstm" else 3, batch, input_size, hidden, steps=steps,
                         cell_state=kind == "lstm")
    lengths = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    op = f"{kind}_layer"
    compare_with_reference(functools.partial(getattr(F, op), lengths=lengths, reverse=reverse, backend="triton"),
                           functools.partial(getattr(reference, op), lengths=lengths, reverse=reverse), inputs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_strided_inputs_without_bias(poisoned_allocations, layer_schedule, kind):
    inputs = _rnn_inputs(4 if kind == "lstm" else 3, 3, 5, 7, bias=False, steps=3, cell_state=kind == "lstm")
    lengths = torch.tensor([2, 3, 1], device=DEVICE)
    op = f"{kind}_layer"
    fused = functools.partial(getattr(F, op), lengths=lengths, reverse=True, backend="triton")
    compare_with_reference(_with_strided_inputs(fused, tuple(inputs)),
                           functools.partial(getattr(reference, op), lengths=lengths, reverse=True), inputs)


class _Launches:
    """Triton kernel launches by kernel name: ``ran`` those run from the host, ``replayed`` those a stand-in graph's
    replay re-ran (a CUDA graph's replay runs its kernels without Python), and ``replays`` the graph replays."""

    def __init__(self):
        self.ran, self.replayed, self.replays, self.replaying = collections.Counter(), collections.Counter(), 0, False

    def take(self) -> tuple[dict, int, dict]:
        """(ran, replays, replayed) since the last take."""
        taken = dict(self.ran), self.replays, dict(self.replayed)
        self.ran, self.replayed, self.replays = collections.Counter(), collections.Counter(), 0
        return taken


@pytest.fixture
def launches(monkeypatch):
    """Count the Triton kernel launches (at the launch path of triton's JIT, or of its interpreter here) and the step
    graphs' replays."""
    from s2s_fast.triton import lstm_layer, step_graphs

    counts = _Launches()
    kernel_type = type(lstm_layer._lstm_layer_fwd_kernel)
    run = kernel_type.run

    def counted_run(self, *args, **kwargs):
        if not kwargs.get("warmup", False):
            (counts.replayed if counts.replaying else counts.ran)[self.fn.__name__] += 1
        return run(self, *args, **kwargs)

    def counted(replay):
        def counted_replay(self):
            counts.replays += 1
            counts.replaying = True
            try:
                replay(self)
            finally:
                counts.replaying = False

        return counted_replay

    monkeypatch.setattr(kernel_type, "run", counted_run)
    for graph_type in (step_graphs.RecordedGraph, step_graphs.CudaGraph):
        monkeypatch.setattr(graph_type, "replay", counted(graph_type.replay))
    return counts


@pytest.fixture
def step_graph_cache(monkeypatch):
    """An empty step-graph cache for the test."""
    from s2s_fast.triton import step_graphs

    cache = step_graphs.StepGraphs()
    monkeypatch.setattr(step_graphs, "STEP_GRAPHS", cache)
    return cache


def _layer_variant(kind: str, variant: str):
    """The Triton layer forced into one schedule, as the benchmarks time it."""
    import s2s_fast.triton

    return s2s_fast.triton.VARIANTS[f"{kind}_layer"][variant][0]


def _layer_call(kind, variant, steps=5, batch=3, input_size=4, hidden=5, lengths=(5, 0, 2), reverse=True, **options):
    """(the variant bound to lengths and direction, the reference likewise, fresh random inputs)."""
    inputs = _rnn_inputs(4 if kind == "lstm" else 3, batch, input_size, hidden, steps=steps,
                         cell_state=kind == "lstm", **options)
    lengths = None if lengths is None else torch.tensor(lengths, device=DEVICE)
    return (functools.partial(_layer_variant(kind, variant), lengths=lengths, reverse=reverse),
            functools.partial(getattr(reference, f"{kind}_layer"), lengths=lengths, reverse=reverse), inputs)


def _kernels(kind):
    return f"_{kind}_layer_fwd_kernel", f"_{kind}_layer_bwd_kernel"


@pytest.mark.parametrize("variant", ["persistent", "persistent spread", "per step"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_launches_per_call(launches, step_graph_cache, kind, variant):
    """Triton launches of one layer call of T steps, forward and backward: persistent (either) 1 + 1, per step
    T + T (each step's gate GEMM and cell in one kernel)."""
    steps = 5
    forward, backward = _kernels(kind)
    for _ in range(2):
        with _programs_at_once() if variant == "persistent spread" else contextlib.nullcontext():
            compare_with_reference(*_layer_call(kind, variant, steps=steps))
        one = variant.startswith("persistent")
        expected = {forward: 1, backward: 1} if one else {forward: steps, backward: steps}
        assert launches.take() == (expected, 0, {})
    assert len(step_graph_cache) == 0


@pytest.mark.skipif(DEVICE.type != "cpu", reason="counts the stand-in graph's replayed launches (the interpreter)")
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_graph_replay_launches_and_results(poisoned_allocations, launches, step_graph_cache, kind,
                                                     reverse):
    """Per step + graph, forward and backward, each call on new data of one shape against the reference (stale
    static buffers would show): the first call launches T + T; the second runs T + T on the static buffers and
    captures T + T; every later call launches nothing and replays two graphs (the stand-in re-runs T + T)."""
    steps = 5
    forward, backward = _kernels(kind)
    both = {forward: steps, backward: steps}
    for call in range(4):
        compare_with_reference(*_layer_call(kind, "per step + graph", steps=steps, reverse=reverse))
        ran, replays, replayed = launches.take()
        captured = [len(graph.launches) for graph in step_graph_cache.graphs()]
        if call < 2:
            assert (ran, replays, replayed) == (both, 0, {}), call
            assert captured == ([] if call == 0 else [steps, steps])
        else:
            assert (ran, replays, replayed) == ({}, 2, both), call
            assert captured == [steps, steps]


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the stand-in graph (the interpreter)")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_graphs_are_keyed_by_shape_layout_and_flags(launches, step_graph_cache, kind):
    """After one shape's graphs are captured, a call that differs in the batch, the steps, the direction, lengths,
    biases or the layout of W_hh runs its own launches (a first call), and every result matches the reference."""
    forward, backward = _kernels(kind)
    for _ in range(2):
        compare_with_reference(*_layer_call(kind, "per step + graph"))
    launches.take()
    others = [dict(batch=2, lengths=(1, 5)), dict(steps=4, lengths=(4, 0, 2)), dict(reverse=False),
              dict(lengths=None)]
    for options in others:
        steps = options.get("steps", 5)
        compare_with_reference(*_layer_call(kind, "per step + graph", **options))
        assert launches.take() == ({forward: steps, backward: steps}, 0, {}), options
    # Without biases the forward's launches differ; the backward's (which read no bias) replay.
    compare_with_reference(*_layer_call(kind, "per step + graph", bias=False))
    assert launches.take() == ({forward: 5}, 1, {backward: 5})
    fused, unfused, inputs = _layer_call(kind, "per step + graph")
    compare_with_reference(_with_strided_inputs(fused, ("weight_hh",)), unfused, inputs)
    assert launches.take() == ({forward: 5, backward: 5}, 0, {})
    compare_with_reference(*_layer_call(kind, "per step + graph"))
    assert launches.take()[:2] == ({}, 2)
    assert len(step_graph_cache) == 2


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the stand-in graph (the interpreter)")
def test_auto_never_replays_on_the_interpreter(launches, step_graph_cache, layer_schedule):
    """The cost model replays graphs on CUDA tensors only: auto's per-step schedule here launches T + T per call."""
    for _ in range(3):
        fused, unfused, inputs = _layer_call("lstm", "per step", steps=9, lengths=None)
        compare_with_reference(functools.partial(F.lstm_layer, reverse=True, backend="triton"), unfused, inputs)
        count = 1 if layer_schedule == "persistent" else 9
        assert launches.take() == ({"_lstm_layer_fwd_kernel": count, "_lstm_layer_bwd_kernel": count}, 0, {})
    assert len(step_graph_cache) == 0


@contextlib.contextmanager
def _programs_at_once():
    """The spread schedule's programs wait for each other: on the CPU, run the interpreter's programs of a launch
    at once, one thread each (on a GPU they are)."""
    if DEVICE.type == "cuda":
        yield
        return
    from s2s_fast.triton.interpreter_threads import concurrent_programs

    with concurrent_programs(timeout_s=120):
        yield


@pytest.mark.parametrize("steps,batch,input_size,hidden,lengths", [
    (1, 1, 3, 5, None),
    (4, 17, 9, 33, [4, 0, 2, 1, 3, 4, 4, 0, 1, 2, 3, 4, 1, 1, 0, 2, 3]),  # 2 batch tiles x 3 hidden tiles
])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_spread_matches_reference(poisoned_allocations, kind, steps, batch, input_size, hidden, lengths,
                                            reverse):
    """The spread persistent schedule (one program per batch tile x hidden tile for all steps, a barrier across a
    batch tile's programs between steps), forward and every gradient; the programs run at once, each at a pace of
    its own, so a missing or miscounted barrier shows."""
    with _programs_at_once():
        compare_with_reference(*_layer_call(kind, "persistent spread", steps=steps, batch=batch,
                                            input_size=input_size, hidden=hidden, lengths=lengths, reverse=reverse))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_spread_strided_inputs_without_bias(kind):
    fused, unfused, inputs = _layer_call(kind, "persistent spread", steps=3, batch=3, input_size=5, hidden=20,
                                         lengths=(2, 3, 1), bias=False)
    with _programs_at_once():
        compare_with_reference(_with_strided_inputs(fused, tuple(inputs)), unfused, inputs)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's limit")
def test_spread_schedule_is_refused_where_programs_run_one_after_another():
    """Under the plain interpreter a program waiting at the barrier would wait forever: the call is refused, and the
    benchmarks list the variant unavailable, saying why."""
    import s2s_fast.triton

    fused, _, inputs = _layer_call("lstm", "persistent spread")
    _, limit = s2s_fast.triton.VARIANTS["lstm_layer"]["persistent spread"]
    assert "one after another" in limit(*inputs.values())
    with pytest.raises(ValueError, match="one after another"):
        fused(**inputs)


def test_the_default_schedule_is_spread_where_it_runs_and_a_forced_one_wins(monkeypatch):
    """Where utils.spread_by_default says so (a GPU where spread runs), the default is the spread schedule; forcing
    persistent, per step or a graph replay overrides it, and a CPU tensor never takes it by default."""
    from s2s_fast.triton import utils

    input, hx = torch.zeros(5, 3, 4), torch.zeros(3, 384)  # W_hh past PERSISTENT_MAX_WEIGHT_BYTES: per step
    assert not utils.spread_by_default(input, hx)
    assert utils.layer_schedule(4, input, hx, None, None, None)[::2] == (False, False)
    monkeypatch.setattr(utils, "spread_by_default", lambda input, hx: True)
    assert utils.layer_schedule(4, input, hx, None, None, None) == (True, False, True)
    assert utils.layer_schedule(4, input, hx, True, None, None) == (True, False, False)
    assert utils.layer_schedule(4, input, hx, False, None, None)[::2] == (False, False)
    assert utils.layer_schedule(4, input, hx, None, True, None)[2] is False
    assert utils.layer_schedule(4, input, hx, None, None, False)[2] is False


def test_spread_blocks_keep_one_program_per_multiprocessor():
    from s2s_fast.triton.utils import spread_blocks

    assert spread_blocks(64, 512, torch.float16, 132) == (16, 16, 64)  # 4 x 32 programs
    assert spread_blocks(128, 512, torch.float32, 132) == (32, 16, 32)  # 4 x 32
    assert spread_blocks(256, 1024, torch.bfloat16, 132) == (64, 32, 64)  # 4 x 32
    assert spread_blocks(1024, 4096, torch.float16, 132) is None


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter's threads")
@pytest.mark.parametrize("arrivals_needed,finishes", [(3, True), (4, False)])
def test_concurrent_programs_end_a_barrier_not_every_program_reaches(arrivals_needed, finishes):
    """Three programs meet at utils.wait_for_batch_tile: all pass when it waits for three arrivals; when it waits
    for a fourth, the launch fails after the timeout instead of hanging, and its programs end."""
    import threading

    from s2s_fast.triton.interpreter_threads import ProgramsStillWaiting, concurrent_programs

    arrivals = torch.zeros(1, dtype=torch.int32)
    passed = torch.zeros(3, dtype=torch.int32)
    threads_before = threading.active_count()
    with concurrent_programs(timeout_s=5):
        if finishes:
            _meet[(3,)](arrivals, passed, arrivals_needed)
        else:
            with pytest.raises(Exception) as raised:
                _meet[(3,)](arrivals, passed, arrivals_needed)
            assert isinstance(raised.value.__cause__ or raised.value, ProgramsStillWaiting)
    assert passed.tolist() == ([1, 1, 1] if finishes else [0, 0, 0])
    assert threading.active_count() == threads_before


@triton.jit
def _meet(arrivals_ptr, passed_ptr, arrivals_needed):
    wait_for_batch_tile(arrivals_ptr, arrivals_needed)
    tl.store(passed_ptr + tl.program_id(0), 1)


def _cumulative_sums(tensors):
    """A toy per-step schedule: step t launches sums[t] = sums[t - 1] + values[t] (sums[-1] = start)."""
    from s2s_fast.triton.step_graphs import launch

    values, sums, start = tensors["values"], tensors["sums"], tensors["start"]
    for t in range(values.shape[0]):
        launch(lambda t=t: torch.add(sums[t - 1] if t else start, values[t], out=sums[t]))


def _run_cumulative_sums(cache, steps, width=3, key=("sums",)):
    values, start = torch.randn(steps, width), torch.randn(width)
    sums = torch.full((steps, width), float("nan"))
    cache.run(key, _cumulative_sums, dict(values=values, start=start, sums=sums), written=("sums",),
              fresh=("sums",))
    torch.testing.assert_close(sums, start + values.cumsum(0))


def test_step_graph_cache_is_bounded_and_captures_on_a_second_call(launches):
    from s2s_fast.triton.step_graphs import RecordedGraph, StepGraphs

    cache = StepGraphs(max_graphs=2, max_seen=2)
    for steps in (1, 2, 3):
        for _ in range(3):
            _run_cumulative_sums(cache, steps)
    assert len(cache) == 2 and [len(graph.launches) for graph in cache.graphs()] == [2, 3]
    assert all(isinstance(graph, RecordedGraph) for graph in cache.graphs())
    assert launches.replays == 3
    # Shape 1's graph went first; seen once more, it captures anew on the second call and replays on the third.
    _run_cumulative_sums(cache, 1)
    assert launches.replays == 3 and [len(graph.launches) for graph in cache.graphs()] == [2, 3]
    _run_cumulative_sums(cache, 1)
    assert launches.replays == 3 and [len(graph.launches) for graph in cache.graphs()] == [3, 1]
    _run_cumulative_sums(cache, 1)
    assert launches.replays == 4
    # Keys seen once and not captured are bounded too.
    for steps in (4, 5):
        _run_cumulative_sums(cache, steps)
    assert len(cache._seen) == 2
    cache.clear()
    assert len(cache) == 0 and len(cache._seen) == 0


def test_step_graph_capture_refuses_work_besides_launches():
    """A stand-in graph replays the launches alone: other tensor work during its capture would be lost, so it fails
    (a CUDA graph would have captured it)."""
    from s2s_fast.triton.step_graphs import StepGraphs

    def launches_and_a_copy(tensors):
        _cumulative_sums(tensors)
        tensors["sums"][0].zero_()

    cache = StepGraphs()
    tensors = dict(values=torch.randn(2, 3), start=torch.randn(3), sums=torch.empty(2, 3))
    cache.run(("sums",), launches_and_a_copy, tensors, written=("sums",))
    with pytest.raises(RuntimeError, match="only kernel launches"):
        cache.run(("sums",), launches_and_a_copy, tensors, written=("sums",))


def test_step_graphs_are_not_used_while_torch_traces():
    from torch._library.triton import set_wrap_triton_enabled

    from s2s_fast.triton.step_graphs import replay_available

    tensor = torch.zeros(1, device=DEVICE)
    with set_wrap_triton_enabled(False):
        assert replay_available(tensor)
    with set_wrap_triton_enabled(True):
        assert not replay_available(tensor)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_cuda_graph_replay_on_the_gpu(launches, step_graph_cache, kind):
    """The real torch.cuda.CUDAGraph path against the reference, at sizes with several batch and hidden tiles: new
    data each call; from the third call no kernel launch from Python, two replays. Inside a capture of the caller's
    own the layer launches directly (its launches become part of that graph) and the cache is left alone."""
    from s2s_fast.triton.step_graphs import CudaGraph

    shape = dict(steps=24, batch=40, input_size=48, hidden=160, lengths=None)
    for call in range(4):
        compare_with_reference(*_layer_call(kind, "per step + graph", **shape))
        ran, replays, _ = launches.take()
        assert (ran == {}, replays) == ((True, 2) if call >= 2 else (False, 0)), call
    assert len(step_graph_cache) == 2 and all(isinstance(g, CudaGraph) for g in step_graph_cache.graphs())
    fused, unfused, inputs = _layer_call(kind, "per step + graph", **shape)
    with torch.no_grad():
        fused(**inputs)  # compiles the no-grad call's kernels before the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fused(**inputs)
        for static in inputs.values():
            if static is not None:
                static.copy_(torch.randn_like(static) * 0.1)
        graph.replay()
        expected = unfused(**inputs)
    for ours, theirs in zip(outputs, expected):
        torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=2e-5)
    assert len(step_graph_cache) == 2


def _op_cases():
    from s2s_fast.triton import additive_attention, gru_cell, gru_layer, lstm_cell, lstm_layer

    attention = _attention_inputs(2, 3, 5, 4, 3)
    layer = _rnn_inputs(4, 3, 5, 4, steps=3)
    gru = _rnn_inputs(3, 3, 5, 4, steps=3, cell_state=False)
    return {
        "additive_attention": (additive_attention.additive_attention_fwd, tuple(attention.values())),
        "lstm_cell": (lstm_cell.lstm_cell_fwd, tuple(_rnn_inputs(4, 3, 5, 4).values())),
        "gru_cell": (gru_cell.gru_cell_fwd, tuple(_rnn_inputs(3, 3, 5, 4, cell_state=False).values())),
        "lstm_layer": (lstm_layer.lstm_layer_fwd,
                       tuple(layer.values()) + (torch.tensor([3, 0, 2], device=DEVICE), True, False)),
        "lstm_layer_persistent": (lstm_layer.lstm_layer_fwd,
                                  tuple(layer.values()) + (torch.tensor([3, 0, 2], device=DEVICE), True, True)),
        "gru_layer": (gru_layer.gru_layer_fwd,
                      tuple(gru.values()) + (torch.tensor([3, 0, 2], device=DEVICE), False, False)),
        "gru_layer_persistent": (gru_layer.gru_layer_fwd,
                                 tuple(gru.values()) + (torch.tensor([1, 3, 0], device=DEVICE), True, True)),
    }


@pytest.mark.parametrize("op", ["additive_attention", "lstm_cell", "gru_cell", "lstm_layer", "lstm_layer_persistent",
                                "gru_layer", "gru_layer_persistent"])
def test_opcheck(op):
    """torch.library's consistency checks of the registered ops; fake-tensor tracing needs a GPU (the
    interpreter reads data pointers)."""
    custom_op, args = _op_cases()[op]
    args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    test_utils = None if DEVICE.type == "cuda" else ("test_schema", "test_autograd_registration")
    kwargs = {} if test_utils is None else {"test_utils": test_utils}
    torch.library.opcheck(custom_op, args, **kwargs)


def test_kernels_compile_for_the_gpu():
    """The interpreter accepts code the GPU compiler rejects: compile every kernel for sm_90 (no GPU needed)."""
    import os
    import subprocess
    import sys

    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this triton has no NVIDIA backend tools")
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "check_triton_kernels.py")
    result = subprocess.run([sys.executable, script, "--arch", "90"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hot_loop_costs_are_read_from_the_innermost_tanh_loop():
    """scripts/check_triton_kernels.py's reading of the PTX that bounds shuffles and barriers per tanh."""
    from scripts_module import load_script

    check = load_script("check_triton_kernels")
    ptx = "\n".join([
        "$L__BB0_1:", "tanh.approx.f32 %r1, %r2;", "shfl.sync.bfly.b32 %r3, %r4, 1, 31, -1;",
        "$L__BB0_2:", "tanh.approx.f32 %r5, %r6;", "tanh.approx.f32 %r7, %r8;", "bar.sync 0;",
        "@%p1 bra $L__BB0_2;",  # the inner loop: 2 tanh, 0 shuffles, 1 barrier
        "shfl.sync.bfly.b32 %r9, %r10, 2, 31, -1;", "@%p2 bra $L__BB0_1;", "ret;"])
    assert check.tanh_loop_costs(ptx) == (2, 0, 1)
    assert check.tanh_loop_costs("mov.f32 %r1, %r2;\nret;") is None


def test_unavailable_reason_says_what_to_do(monkeypatch):
    import s2s_fast.triton as triton_backend

    assert triton_backend.unavailable_reason(torch.device("cuda")) is None
    monkeypatch.setattr(triton_backend, "interpreting", lambda: False)
    reason = triton_backend.unavailable_reason(torch.device("cpu"))
    assert "CUDA" in reason and "TRITON_INTERPRET=1" in reason


def test_explicit_request_beyond_limits_raises():
    double = _attention_inputs(2, 3, 5, 4, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="triton.*float64"):
        F.additive_attention(**double, backend="triton")
    empty = _attention_inputs(2, 3, 5, 4, 3)
    empty["key_proj"], empty["values"], empty["mask"] = empty["key_proj"][:, :0], empty["values"][:, :0], None
    with pytest.raises(RuntimeError, match="empty"):
        F.additive_attention(**empty, backend="triton")
    cell = _rnn_inputs(4, 2, 3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float64"):
        F.lstm_cell(**cell, backend="triton")
    with pytest.raises(RuntimeError, match="float64"):
        F.lstm_layer(**_rnn_inputs(4, 2, 3, 4, steps=2, dtype=torch.float64), backend="triton")


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the limit is the interpreter's")
def test_bfloat16_rnn_on_the_interpreter_is_refused():
    with pytest.raises(RuntimeError, match="bfloat16"):
        F.gru_cell(**_rnn_inputs(3, 2, 3, 4, cell_state=False, dtype=torch.bfloat16), backend="triton")


def test_auto_picks_triton_on_cuda_tensors_and_falls_back_beyond_its_limits():
    """Auto's choice for a CUDA device, decided from the argument checks alone (no kernel runs)."""
    if backends.unavailable_reason("cuda", torch.device("cuda")) is None:
        pytest.skip("the CUDA extension is built: auto prefers it")
    cuda = torch.device("cuda")
    single = _attention_inputs(2, 3, 5, 4, 3)
    args = tuple(single.values())
    assert backends.resolve("additive_attention", cuda, args)[0] == "triton"
    double = tuple(t.double() if t.is_floating_point() else t for t in args)
    assert backends.resolve("additive_attention", cuda, double)[0] == "reference"
    cell = tuple(_rnn_inputs(4, 2, 3, 4, dtype=torch.float64).values())
    assert backends.resolve("lstm_cell", cuda, cell)[0] == "reference"
    with s2s_fast.use_backend("triton"), pytest.raises(RuntimeError, match="float64"):
        backends.resolve("additive_attention", cuda, double)


def test_sizes_beyond_32_bit_offsets_fall_back():
    """Expanded tensors have the shapes of calls past 2**31 elements without the memory; no kernel runs."""
    if backends.unavailable_reason("cuda", torch.device("cuda")) is None:
        pytest.skip("the CUDA extension is built: auto prefers it")
    cuda, hidden = torch.device("cuda"), 2**15
    huge = torch.zeros(()).expand(4 * hidden, hidden)  # 2**32 elements
    cell = (torch.zeros(2, 3), torch.zeros(2, hidden), torch.zeros(2, hidden), torch.zeros(()).expand(4 * hidden, 3),
            huge, None, None)
    attention = (torch.zeros(1, 2, hidden), torch.zeros(()).expand(1, 2**16, hidden), torch.zeros(hidden),
                 torch.zeros(()).expand(1, 2**16, 1), None)
    for op, args in (("lstm_cell", cell), ("additive_attention", attention)):
        assert backends.resolve(op, cuda, args)[0] == "reference", op
        with pytest.raises(RuntimeError, match=r"2\*\*31"):
            backends.resolve(op, cuda, args, backend="triton")


def _autocast_dtype():
    return torch.bfloat16 if DEVICE.type == "cuda" else torch.float16


@pytest.mark.parametrize("op", ["additive_attention", "lstm_cell", "lstm_layer", "gru_layer"])
def test_autocast(op):
    """Under autocast the ops run in the autocast dtype and give float32 leaves float32 gradients; on a CPU (the
    interpreter's device) the cells and the GRU layer keep float32, as torch's own do under CPU autocast."""
    dtype = _autocast_dtype()
    kept = DEVICE.type == "cpu" and op in ("lstm_cell", "gru_cell", "gru_layer")
    if op == "additive_attention":
        inputs = _attention_inputs(2, 3, 7, 8, 4)
    else:
        inputs = _rnn_inputs(3 if op == "gru_layer" else 4, 3, 5, 16, steps=3 if op.endswith("layer") else None,
                             cell_state=op != "gru_layer")
    fn = getattr(F, op)
    with torch.autocast(DEVICE.type, dtype=dtype):
        outputs, grads, upstream = forward_backward(functools.partial(fn, backend="triton"), inputs)
        expected, expected_grads, _ = forward_backward(functools.partial(fn, backend="reference"), inputs,
                                                       upstream=upstream)
    for actual, reference_output in zip(outputs, expected):
        assert actual.dtype == (torch.float32 if kept else dtype)
        torch.testing.assert_close(actual.float(), reference_output.float(), rtol=2e-2, atol=2e-2)
    for name, grad in grads.items():
        if grad is not None:
            assert grad.dtype == torch.float32, name
            torch.testing.assert_close(grad, expected_grads[name], rtol=5e-2, atol=5e-2)


def _low_precision_errors(fn, reference_fn, inputs, dtype):
    """Relative errors (outputs, then gradients) of fn in ``dtype`` and of the reference in ``dtype``, both
    measured against the reference in float64 driven by the same upstream gradients."""
    exact = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    low = {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in inputs.items()}
    exact_out, exact_grads, upstream = forward_backward(reference_fn, exact)
    low_upstream = [u.to(dtype) for u in upstream]
    results = []
    for candidate in (fn, reference_fn):
        out, grads, _ = forward_backward(candidate, low, upstream=low_upstream)
        errors = [relative_error(o, e) for o, e in zip(out, exact_out)]
        errors += [relative_error(grads[n], g) for n, g in exact_grads.items() if g is not None]
        results.append(errors)
    return results


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_schedules_on_the_gpu(layer_schedule, kind, dtype, reverse):
    """Both schedules at sizes with several batch and hidden tiles, where the persistent one's barrier between
    steps matters (the interpreter runs one program at a time and cannot show a missing one)."""
    steps, batch = 24, 40
    lengths = torch.randint(0, steps + 1, (batch,), device=DEVICE)
    lengths[0] = steps
    inputs = _rnn_inputs(4 if kind == "lstm" else 3, batch, 48, 160, steps=steps, cell_state=kind == "lstm")
    fn = functools.partial(getattr(F, f"{kind}_layer"), lengths=lengths, reverse=reverse)
    if dtype == torch.float32:
        compare_with_reference(functools.partial(fn, backend="triton"), functools.partial(fn, backend="reference"),
                               inputs)
        return
    fused, unfused = _low_precision_errors(functools.partial(fn, backend="triton"),
                                           functools.partial(fn, backend="reference"), inputs, dtype)
    for index, (ours, theirs) in enumerate(zip(fused, unfused)):
        assert ours <= LOW_PRECISION_ERROR_RATIO * theirs, f"result {index}: error {ours:.3g}, reference {theirs:.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_layer_spread_on_the_gpu(kind, dtype, reverse):
    """The spread schedule where its barrier meets the GPU's memory model (the interpreter's threads see every store
    at once): 3 batch tiles x 10 hidden tiles of programs waiting for each other every step, and a grid of 128
    programs (B = 64, H = 512), each against the reference."""
    for steps, batch, input_size, hidden in ((24, 40, 48, 160), (6, 64, 32, 512)):
        lengths = torch.randint(0, steps + 1, (batch,)).tolist()
        lengths[0] = steps
        fused, unfused, inputs = _layer_call(kind, "persistent spread", steps=steps, batch=batch,
                                             input_size=input_size, hidden=hidden, lengths=lengths, reverse=reverse)
        if dtype == torch.float32:
            compare_with_reference(fused, unfused, inputs)
            continue
        ours, theirs = _low_precision_errors(fused, unfused, inputs, dtype)
        for index, (error, reference_error) in enumerate(zip(ours, theirs)):
            assert error <= LOW_PRECISION_ERROR_RATIO * reference_error, (
                f"result {index}: error {error:.3g}, reference {reference_error:.3g}")


@pytest.mark.gpu
def test_compiled_ops_trace_without_graph_breaks():
    """The fused ops inside one fullgraph torch.compile region, forward and backward, match eager."""
    from s2s_fast.triton import additive_attention, gru_cell, gru_layer, lstm_cell, lstm_layer

    attention = _attention_inputs(4, 6, 9, 32, 16)
    cell = _rnn_inputs(4, 4, 32, 16)
    layer = _rnn_inputs(4, 4, 32, 16, steps=5)
    gru = _rnn_inputs(3, 4, 32, 16, cell_state=False)
    gru_seq = _rnn_inputs(3, 4, 32, 16, steps=5, cell_state=False)
    inputs = {**{f"a_{k}": v for k, v in attention.items()}, **{f"c_{k}": v for k, v in cell.items()},
              **{f"l_{k}": v for k, v in layer.items()}, **{f"g_{k}": v for k, v in gru.items()},
              **{f"s_{k}": v for k, v in gru_seq.items()}}

    def block(**kwargs):
        def pick(prefix):
            return {k[len(prefix):]: v for k, v in kwargs.items() if k.startswith(prefix)}

        context, weights = additive_attention.additive_attention(**pick("a_"))
        hy, cy = lstm_cell.lstm_cell(**pick("c_"))
        output, layer_hy, layer_cy = lstm_layer.lstm_layer(**pick("l_"), lengths=None, reverse=True)
        gru_output, gru_hy = gru_layer.gru_layer(**pick("s_"))
        return (context, weights, hy, cy, output, layer_hy, layer_cy, gru_cell.gru_cell(**pick("g_")), gru_output,
                gru_hy)

    torch._dynamo.reset()
    compare_with_reference(torch.compile(block, fullgraph=True), block, inputs)


@pytest.mark.gpu
def test_compiled_nn_block_on_triton_is_one_graph():
    """s2s_fast.nn LSTM + AdditiveAttention on the Triton backend compile into one graph and match eager."""
    import s2s_fast.nn as snn

    lstm = snn.LSTM(4, 6, num_layers=2, bidirectional=True, backend="triton").to(DEVICE)
    attention = snn.AdditiveAttention(12, 12, 5, backend="triton").to(DEVICE)

    def block(x, mask):
        memory, _ = lstm(x)
        memory = memory.transpose(0, 1)
        return attention(memory[:, -1], memory, mask=mask)

    x, mask = torch.randn(5, 3, 4, device=DEVICE), torch.rand(3, 5, device=DEVICE) > 0.3
    mask[:, -1] = True
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    parameters = list(lstm.parameters()) + list(attention.parameters())
    runs = []
    for fn in (compiled, block):
        outputs = fn(x, mask)
        grads = torch.autograd.grad([o.square().sum() for o in outputs], parameters)
        runs.append([o.detach() for o in outputs] + list(grads))
    for got, expected in zip(*runs):
        torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-5)


@pytest.mark.gpu
def test_compiled_attention_decoder_block_matches_reference():
    """An LSTM encoder + attention decoder step block through the functional API, compiled, against eager."""
    batch, steps, input_size, hidden = 4, 7, 12, 32
    encoder = _rnn_inputs(4, batch, input_size, hidden, steps=steps)
    decoder = _rnn_inputs(4, batch, hidden, hidden)
    projection = _uniform(hidden, hidden, bound=hidden ** -0.5, dtype=torch.float32)
    v = torch.randn(hidden, device=DEVICE) * hidden ** -0.5
    lengths = torch.tensor([7, 3, 5, 1], device=DEVICE)
    inputs = {**{f"e_{k}": t for k, t in encoder.items()}, **{f"d_{k}": t for k, t in decoder.items()},
              "projection": projection, "v": v}

    def block(backend, **kwargs):
        enc = {k[2:]: t for k, t in kwargs.items() if k.startswith("e_")}
        dec = {k[2:]: t for k, t in kwargs.items() if k.startswith("d_")}
        states, _, _ = F.lstm_layer(**enc, lengths=lengths, backend=backend)
        keys = states.transpose(0, 1)
        mask = torch.arange(steps, device=DEVICE)[None, :] < lengths[:, None]
        hy, cy = F.lstm_cell(**dec, backend=backend)
        context, weights = F.additive_attention(hy @ kwargs["projection"], keys @ kwargs["projection"],
                                                kwargs["v"], keys, mask, backend=backend)
        return context, weights, cy

    torch._dynamo.reset()
    compiled = torch.compile(functools.partial(block, "triton"))
    compare_with_reference(compiled, functools.partial(block, "reference"), inputs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_nn_module_with_triton_backend_matches_torch(kind):
    """s2s_fast.nn.LSTM / GRU on the Triton backend against torch.nn: packed unsorted input, two bidirectional
    layers, batch_first; same outputs, final states and gradients of input, initial state and every parameter."""
    import s2s_fast.nn as snn
    from torch.nn.utils.rnn import pack_padded_sequence

    ours_type, torch_type = (snn.LSTM, torch.nn.LSTM) if kind == "lstm" else (snn.GRU, torch.nn.GRU)
    config = dict(input_size=5, hidden_size=7, num_layers=2, bidirectional=True, batch_first=True)
    theirs = torch_type(**config).to(DEVICE)
    ours = ours_type(**config, backend="triton").to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    lengths = torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, 5, device=DEVICE)
    h0 = torch.randn(4, 4, 7, device=DEVICE)
    c0 = torch.randn(4, 4, 7, device=DEVICE)
    upstream = None
    results = []
    for module in (ours, theirs):
        leaves = [x.clone().requires_grad_(), h0.clone().requires_grad_(), c0.clone().requires_grad_()]
        packed = pack_padded_sequence(leaves[0], lengths, batch_first=True, enforce_sorted=False)
        state = (leaves[1], leaves[2]) if kind == "lstm" else leaves[1]
        output, final = module(packed, state)
        outputs = (output.data,) + (final if kind == "lstm" else (final,))
        if upstream is None:
            upstream = [torch.randn_like(o) for o in outputs]
        torch.autograd.backward(outputs, upstream)
        grads = [leaf.grad for leaf in leaves[:3 if kind == "lstm" else 2]]
        grads += [p.grad for p in module.parameters()]
        results.append(([o.detach() for o in outputs], grads))
    (our_outputs, our_grads), (their_outputs, their_grads) = results
    for actual, expected in zip(our_outputs + our_grads, their_outputs + their_grads):
        torch.testing.assert_close(actual, expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_nn_cell_with_triton_backend_matches_torch(kind):
    import s2s_fast.nn as snn

    ours_type, torch_type = (snn.LSTMCell, torch.nn.LSTMCell) if kind == "lstm" else (snn.GRUCell, torch.nn.GRUCell)
    theirs = torch_type(5, 7).to(DEVICE)
    ours = ours_type(5, 7, backend="triton").to(DEVICE)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, device=DEVICE)
    results = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        out = out[0] + out[1] if kind == "lstm" else out
        out.square().sum().backward()
        results.append([out.detach(), leaf.grad] + [p.grad for p in module.parameters()])
    for actual, expected in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_seq2seq_model_on_triton_matches_reference(input_feeding):
    """A whole attention Seq2Seq model (LSTM encoder and decoder, Bahdanau attention) on the Triton backend: the
    same loss and parameter gradients as on the reference backend."""
    from s2s_fast.models import Seq2Seq, Seq2SeqConfig
    from s2s_fast.models.seq2seq import sequence_loss

    config = dict(src_vocab_size=11, tgt_vocab_size=13, embed_dim=8, hidden_size=10, encoder_layers=2,
                  attention_size=7, input_feeding=input_feeding, dropout=0.0)
    ours = Seq2Seq(Seq2SeqConfig(**config, backend="triton")).to(DEVICE)
    theirs = Seq2Seq(Seq2SeqConfig(**config, backend="reference")).to(DEVICE)
    theirs.load_state_dict(ours.state_dict())
    src = torch.randint(3, 11, (3, 6), device=DEVICE)
    src_lengths = torch.tensor([6, 2, 4], device=DEVICE)
    src[1, 2:] = 0
    src[2, 4:] = 0
    tgt = torch.randint(3, 13, (3, 5), device=DEVICE)
    losses = []
    for model in (ours, theirs):
        loss = sequence_loss(model(src, src_lengths, tgt[:, :-1]), tgt[:, 1:], pad_id=0)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=2e-4, atol=2e-5)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=2e-4, atol=2e-5, msg=lambda m, n=name: f"{n}: {m}")



# Run in a process of its own: with 32-bit offsets the kernels read 2**31 elements before the buffer, a crash.
_FAR_APART_CHECK = """
import torch
from s2s_fast import functional as F
from s2s_fast.triton import lstm_layer


def far_apart(values, axis, stride=2**30):
    # values as a view whose axis steps stride elements (2**30: index 2 lies past 2**31) through a buffer of
    # virtual memory: only the view's own elements are ever written or read.
    strides, inner = [0] * values.dim(), 1
    for dim in reversed(range(values.dim())):
        if dim != axis:
            strides[dim] = inner
            inner *= values.shape[dim]
    strides[axis] = stride
    buffer = torch.empty((values.shape[axis] - 1) * stride + inner, dtype=values.dtype)
    return buffer.as_strided(values.shape, strides).copy_(values)


steps, batch, hidden = 2, 3, 8
hx, cx, w_ih, w_hh = (torch.randn(s) for s in ((batch, hidden), (batch, hidden), (4 * hidden, 5), (4 * hidden, hidden)))
input = torch.randn(steps, batch, 5)
forward = lstm_layer.lstm_layer_fwd(input, hx, cx, w_ih, w_hh, None, None, None, False, False)
grad_output = torch.randn(steps, batch, hidden)
saved = (input, w_ih, w_hh, None, False, False, *forward[3:])
far = lstm_layer.lstm_layer_bwd(far_apart(grad_output, axis=1), hx, cx, *saved)
near = lstm_layer.lstm_layer_bwd(grad_output, hx, cx, *saved)
for ours, theirs in zip(far, near):
    torch.testing.assert_close(ours, theirs)

query, key = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
rest = dict(v=torch.randn(8), values=torch.randn(2, 4, 6), mask=torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]]).bool())
wide = F.additive_attention(far_apart(query, 1), far_apart(key, 1), **rest, backend="triton")
for ours, theirs in zip(wide, F.additive_attention(query, key, **rest, backend="triton")):
    torch.testing.assert_close(ours, theirs)
print("offsets ok")
"""


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the interpreter check; on a GPU the same kernels compile")
def test_offsets_past_2_to_the_31_inside_one_row_or_step():
    """Row offsets times strides are 64-bit: a batch-first gradient [T, B, H] whose batch rows lie 2**30 elements
    apart (row 2 at 2**31), and attention queries and keys whose time steps do, give what contiguous copies give."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _FAR_APART_CHECK], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TRITON_INTERPRET": "1"})
    assert result.returncode == 0 and "offsets ok" in result.stdout, result.stderr[-3000:]
