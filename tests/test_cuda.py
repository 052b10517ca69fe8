"""What is specific to the cuda backend (csrc/ kernels bound as torch.ops.s2s_fast); every op's forward and
gradients against the reference, on every backend, are in tests/ops/.

Plain tests run everywhere: the error without the library, auto never picking cuda on CPU, the limit checks.
Kernel tests run the kernels, on a CUDA GPU with the extension s2s_fast._C or on the CPU through the CUDA emulation
s2s_fast._C_emulated (conftest sets S2S_FAST_CUDA_EMULATE=h100 where there is no GPU; two scheduling seeds there):
misaligned inputs and the scalar paths, the cell's two forward paths, the persistent layer's planner at the target
sizes and its kernels there, the deterministic attention backward, outputs in poisoned memory, opcheck and
torch.compile. Tests marked gpu need a real GPU.
"""

import collections
import functools
import itertools

import pytest
import torch
# pytest puts tests/ on sys.path for this file (tests/ has no __init__.py): tests/ops/inputs.py is ops.inputs.
from ops.inputs import on

import s2s_fast
from s2s_fast import backends, reference
from s2s_fast import functional as F
from s2s_fast.reference.additive_attention import one_query_per_row
from s2s_fast.testing import (compare_low_precision_with_reference, compare_with_reference, forward_backward,
                              tolerance)

import s2s_fast.cuda as cuda_backend
from s2s_fast.cuda import compiled

LOW_PRECISION = [torch.float16, torch.bfloat16]
DTYPES = [torch.float32, *LOW_PRECISION]


def _cell_args(gates, batch, input_size, hidden, dtype=torch.float32, device="cpu", bias=True, lstm=True):
    t = functools.partial(torch.randn, dtype=dtype, device=device)
    args = dict(input=t(batch, input_size), hx=t(batch, hidden))
    if lstm:
        args["cx"] = t(batch, hidden)
    args.update(weight_ih=t(gates * hidden, input_size) / input_size ** 0.5,
                weight_hh=t(gates * hidden, hidden) / hidden ** 0.5,
                bias_ih=t(gates * hidden) if bias else None, bias_hh=t(gates * hidden) if bias else None)
    return args


def _attention_args(batch, queries, keys, attn, value_size, dtype=torch.float32, device="cpu", mask="none"):
    t = functools.partial(torch.randn, dtype=dtype, device=device)
    query_shape = (batch, attn) if queries is None else (batch, queries, attn)
    args = dict(query_proj=t(query_shape), key_proj=t(batch, keys, attn), v=t(attn), values=t(batch, keys, value_size))
    if mask == "none":
        args["mask"] = None
    else:
        generator = torch.Generator().manual_seed(keys)
        mask_tensor = torch.rand(batch, keys, generator=generator) > 0.4
        mask_tensor[:, 0] = True
        if mask == "empty_row":
            mask_tensor[batch // 2] = False
        args["mask"] = mask_tensor.to(device)
    return args


@pytest.mark.skipif(compiled.extension_module is not None or compiled.EMULATED_GPU is not None,
                    reason="the extension is built here, or the emulation is on")
def test_cuda_backend_without_extension_says_how_to_build():
    args = _cell_args(4, 2, 3, 5)
    with pytest.raises(RuntimeError, match=r"s2s_fast\._C is not built.*pip install --no-build-isolation -e \."):
        F.lstm_cell(**args, backend="cuda")
    reason = cuda_backend.unavailable_reason(DEVICE)
    assert "nvcc" in reason and "S2S_FAST_BUILD_CUDA=1" in reason


@pytest.mark.skipif(compiled.EMULATED_GPU is not None, reason="the emulation runs the kernels on CPU tensors")
def test_cuda_backend_refuses_cpu_tensors():
    args = _attention_args(2, 3, 4, 5, 6)
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot serve additive_attention on cpu"):
        F.additive_attention(**args, backend="cuda")
    reasons = (compiled.MISSING_REASON, "the cuda backend runs on CUDA tensors only")
    assert cuda_backend.unavailable_reason(torch.device("cpu")) in reasons
    assert "cuda" not in s2s_fast.available_backends("cpu")


@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "lstm_layer", "additive_attention"])
def test_auto_never_picks_cuda_on_cpu(op):
    cell = _cell_args(4 if op != "gru_cell" else 3, 2, 3, 5, lstm=op != "gru_cell")
    if op in ("lstm_cell", "gru_cell"):
        args = tuple(cell.values())
    elif op == "lstm_layer":
        args = (torch.randn(4, 2, 3), *list(cell.values())[1:], None, False, None)
    else:
        args = tuple(_attention_args(2, 3, 4, 5, 6).values())
    name, _ = backends.resolve(op, torch.device("cpu"), args, backend="auto")
    assert name != "cuda"


@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "lstm_layer", "additive_attention"])
def test_limits_refuse_float64(op):
    double = dict(dtype=torch.float64)
    if op == "additive_attention":
        args = tuple(_attention_args(2, 3, 4, 5, 6, **double).values())
    else:
        cell = _cell_args(3 if op == "gru_cell" else 4, 2, 3, 5, lstm=op != "gru_cell", **double)
        args = tuple(cell.values())
        if op == "lstm_layer":
            args = (torch.randn(4, 2, 3, **double), *args[1:])
    assert set(cuda_backend.LIMITS) == set(cuda_backend.OPS)
    reason = cuda_backend.LIMITS[op](*args)
    assert reason is not None and "torch.float64 is not served" in reason


@pytest.mark.skipif(compiled.MISSING_REASON is not None, reason="the limits come from the built kernels")
def test_attention_limit_refuses_sizes_past_the_kernels():
    limit = cuda_backend.LIMITS["additive_attention"]
    wide = _attention_args(1, 1, 2, compiled.KERNEL_LIMITS["attention_max_width"] + 1, 3)
    assert "attention width" in limit(**wide)
    wide_values = _attention_args(1, 1, 2, 3, compiled.KERNEL_LIMITS["attention_max_width"] + 1)
    assert "value size" in limit(**wide_values)
    many = _attention_args(compiled.KERNEL_LIMITS["attention_max_batch"] + 1, 1, 1, 1, 1)
    assert "batch" in limit(**many)
    assert limit(**_attention_args(2, 3, 4, 5, 6)) is None


@pytest.mark.skipif(compiled.MISSING_REASON is not None, reason="the limits come from the built kernels")
def test_layer_limit_refuses_batches_past_the_block():
    batch = compiled.KERNEL_LIMITS["lstm_layer_max_pairs"] + 1
    cell = _cell_args(4, batch, 3, 5)
    reason = cuda_backend.LIMITS["lstm_layer"](torch.randn(2, batch, 3), *list(cell.values())[1:])
    assert f"at most {batch - 1} rows" in reason


gpu = pytest.mark.gpu
DEVICE = torch.device(compiled.KERNEL_DEVICE_TYPE)
# On a GPU machine the kernel tests always run (and fail without the extension); elsewhere they need the emulation
# (conftest skips them without it).
kernels = pytest.mark.cuda_kernels
# The emulation runs threads between barriers in an order drawn from this seed: two orders per test.
SCHEDULE_SEEDS = ["0", "1"] if compiled.EMULATED_GPU else ["0"]


@pytest.fixture(params=SCHEDULE_SEEDS, ids=lambda seed: f"seed{seed}")
def extension(request, monkeypatch):
    """The built library (the emulated one under its scheduling seed); a GPU run without it fails, saying how to
    build it."""
    if compiled.MISSING_REASON is not None:
        pytest.fail(compiled.MISSING_REASON)
    monkeypatch.setenv("S2S_FAST_CUDA_EMULATE_SEED", request.param)
    return compiled.extension_module


def _check(fn, reference_fn, args, dtype):
    if dtype == torch.float32:
        compare_with_reference(fn, reference_fn, on(args, DEVICE, dtype))
    else:
        compare_low_precision_with_reference(fn, reference_fn, on(args, DEVICE), dtype)


def _poison_allocator_cache():
    """Fill memory the CUDA caching allocator keeps with all-ones bytes (NaN in float32, float16 and bfloat16), so
    tensors allocated next start as NaN. The emulated binding fills every fresh output with NaN itself."""
    if DEVICE.type != "cuda":
        return
    small = [torch.full((1 << 17,), -1, dtype=torch.int32, device=DEVICE) for _ in range(64)]
    large = [torch.full((1 << 24,), -1, dtype=torch.int32, device=DEVICE) for _ in range(4)]
    del small, large


def _misaligned_leaves(args):
    """Each floating tensor as a view one element into a leaf buffer: its data start past a 16-byte boundary, so the
    kernels must take their scalar paths (the sizes below are multiples of every vector width). Returns (the views to
    call with, the leaf buffers whose gradients [1:] belong to the views)."""
    views, leaves = {}, {}
    for name, value in args.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            leaf = torch.cat([value.new_zeros(1), value.flatten()]).requires_grad_()
            leaves[name] = leaf
            views[name] = leaf[1:].view(value.shape)
            assert views[name].data_ptr() % 16 != 0
        else:
            views[name] = value
    return views, leaves


@kernels
@pytest.mark.parametrize("op", ["lstm_cell", "gru_cell", "additive_attention", "lstm_layer"])
def test_misaligned_inputs_take_the_scalar_path(extension, op):
    if op == "additive_attention":
        args = on(_attention_args(3, 5, 12, 16, 8, mask="empty_row"), DEVICE)
        ours, theirs = F.additive_attention, reference.additive_attention
    elif op == "lstm_layer":
        cell = _cell_args(4, 4, 8, 16)
        args = on(dict(input=torch.randn(3, 4, 8), **{k: v for k, v in cell.items() if k != "input"}), DEVICE)
        ours, theirs = F.lstm_layer, reference.lstm_layer
    else:
        args = on(_cell_args(4 if op == "lstm_cell" else 3, 4, 8, 16, lstm=op == "lstm_cell"), DEVICE)
        ours, theirs = getattr(F, op), getattr(reference, op)
    views, leaves = _misaligned_leaves(args)
    outputs = ours(**views, backend="cuda")
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    upstream = [torch.randn_like(o) for o in outputs]
    torch.autograd.backward(outputs, upstream)
    expected, reference_grads, _ = forward_backward(theirs, args, upstream=upstream)
    for index, (actual, wanted) in enumerate(zip(outputs, expected)):
        torch.testing.assert_close(actual.detach(), wanted, **tolerance(torch.float32),
                                   msg=lambda m, i=index: f"output {i}: {m}")
    for name, leaf in leaves.items():
        torch.testing.assert_close(leaf.grad[1:].view(args[name].shape), reference_grads[name],
                                   **tolerance(torch.float32), msg=lambda m, n=name: f"gradient of {n}: {m}")


@kernels
@pytest.mark.parametrize("batch", [1, 5, 8])
def test_lstm_cell_fused_and_cublas_paths_agree(extension, batch):
    args = on(_cell_args(4, batch, 40, 48), DEVICE)
    fused = torch.ops.s2s_fast.cuda_lstm_cell_fused_fwd(*args.values(), True)
    cublas = torch.ops.s2s_fast.cuda_lstm_cell_fwd(*args.values(), True)
    for ours, theirs in zip(fused, cublas):
        torch.testing.assert_close(ours, theirs, **tolerance(torch.float32))


@kernels
@pytest.mark.parametrize("input_size, hidden", [(0, 7), (5, 0)])
def test_lstm_layer_refuses_an_input_or_hidden_size_of_zero_in_words(extension, input_size, hidden):
    """Both were served by the limit, then failed inside the op: I = 0 in the backward (a reshape of 0 elements),
    H = 0 in the planner (its RuntimeError, past auto's fallback)."""
    cell = on(_cell_args(4, 2, input_size, hidden), DEVICE)
    args = (torch.randn(3, 2, input_size, device=DEVICE), *list(cell.values())[1:], None, False)
    assert "an input or hidden size of 0 is not served" in cuda_backend.LIMITS["lstm_layer"](*args)
    with pytest.raises(backends.BackendError, match="an input or hidden size of 0 is not served"):
        F.lstm_layer(*args, backend="cuda")


@kernels
def test_lstm_layer_limit_refuses_what_the_planner_does_not_serve(extension):
    """H = 2048 in float16: 16 units per block need 4 * 16 rows of W_hh, over a block's shared memory."""
    cell = on(_cell_args(4, 2, 8, 2048), DEVICE, torch.float16)
    input = torch.randn(2, 2, 8, device=DEVICE, dtype=torch.float16)
    args = (input, *list(cell.values())[1:], None, False)
    assert cuda_backend.lstm_layer.persistent_plan(torch.float16, 2, 2048, False, 0)[1] == 0
    limit = cuda_backend.LIMITS["lstm_layer"]
    with torch.no_grad():
        assert "persistent LSTM forward kernel does not serve batch 2 x hidden 2048" in limit(*args)
        with pytest.raises(RuntimeError, match="persistent LSTM forward kernel does not serve"):
            F.lstm_layer(*args, backend="cuda")
        name, _ = backends.resolve("lstm_layer", input.device, args, backend="auto")
        assert name != "cuda"


# The sizes the persistent layer must serve on an H100 / H200 in float16 and bfloat16, forward and backward.
TARGET_BATCHES, TARGET_HIDDEN = (1, 16, 64, 128), (256, 512, 1024)
GPUS = ["h100", "h200"] if compiled.EMULATED_GPU else ["this GPU"]


@kernels
@pytest.mark.parametrize("gpu", GPUS)
def test_planner_serves_forward_and_backward_at_the_target_sizes(extension, monkeypatch, gpu):
    if compiled.EMULATED_GPU:
        monkeypatch.setenv(compiled.EMULATE_VARIABLE, gpu)
    _, shared = compiled.device_limits(DEVICE)
    for dtype, batch, hidden, backward in itertools.product(LOW_PRECISION, TARGET_BATCHES, TARGET_HIDDEN,
                                                            (False, True)):
        units, blocks, needed, chunk = cuda_backend.lstm_layer.persistent_plan(dtype, batch, hidden, backward, 0)
        assert blocks > 0 and needed <= shared, (dtype, batch, hidden, backward)
        assert units * batch <= compiled.KERNEL_LIMITS["lstm_layer_max_pairs"] and chunk % 16 == 0
    # LIMITS says what the planner says, for training calls too.
    for hidden, batch in ((512, 64), (1024, 128), (2048, 2), (768, 171)):
        cell = on(_cell_args(4, batch, 8, hidden), DEVICE, torch.bfloat16)
        trained = [t.requires_grad_() if t is not None else t for t in cell.values()]
        input = torch.randn(2, batch, 8, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
        served = all(cuda_backend.lstm_layer.persistent_plan(torch.bfloat16, batch, hidden, backward, 0)[1] > 0
                     for backward in (False, True))
        assert (cuda_backend.LIMITS["lstm_layer"](input, *trained[1:]) is None) == served


# Every hidden size at every batch, float16 and bfloat16 in turn; under the emulation H = 1024 at B = 64 (a plan
# between those of B = 16 and B = 128, which both run) is left to the GPU check to save CI a minute. B = 128 at
# H = 1024 is the largest plan: four (unit, row) pairs per thread, 215 KB of shared memory.
PLANNED_RUNS = [(batch, hidden, dtype) for hidden in TARGET_HIDDEN for batch, dtype in zip(
    TARGET_BATCHES, (torch.float16, torch.bfloat16, torch.float16, torch.bfloat16))
    if not (compiled.EMULATED_GPU and hidden == 1024 and batch == 64)]


@kernels
@pytest.mark.parametrize("extension", SCHEDULE_SEEDS[:1], indirect=True)  # one schedule: these are the slow ones
@pytest.mark.parametrize("batch,hidden,dtype", PLANNED_RUNS, ids=str)
def test_lstm_layer_runs_at_the_planned_sizes(extension, batch, hidden, dtype):
    cell = _cell_args(4, batch, 8, hidden, dtype=torch.float64)
    args = dict(input=torch.randn(2, batch, 8, dtype=torch.float64), **{k: v for k, v in cell.items() if k != "input"})
    lengths = torch.arange(batch, 0, -1) % 3
    lengths[0] = 2
    _check(functools.partial(F.lstm_layer, lengths=lengths.to(DEVICE), reverse=batch % 2 == 0, backend="cuda"),
           functools.partial(reference.lstm_layer, lengths=lengths.to(DEVICE), reverse=batch % 2 == 0), args, dtype)


@kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention_backward_is_deterministic_when_asked(extension, dtype):
    """Several tiles of keys (Tk = 97) add into grad_query: atomically by default, in a fixed order under
    torch.use_deterministic_algorithms(True), which must then give the same bits every run and match the reference."""
    args = _attention_args(4, 12, 97, 64, 32, dtype=torch.float64, mask="random")
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    # warn_only: cuBLAS calls (in the reference, and grad_values' bmm) would otherwise need CUBLAS_WORKSPACE_CONFIG.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        _check(functools.partial(F.additive_attention, backend="cuda"), reference.additive_attention, args, dtype)
        leaves = on(args, DEVICE, dtype)
        upstream = torch.randn(leaves["query_proj"].shape[:2] + (32,), device=DEVICE, dtype=dtype)
        grads = []
        for _ in range(3):
            query = leaves["query_proj"].detach().requires_grad_()
            context, _ = F.additive_attention(**{**leaves, "query_proj": query}, backend="cuda")
            (grad,) = torch.autograd.grad(context, query, upstream)
            grads.append(grad)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])


def _tiled_attention_mask(batch, keys):
    """A mask over tiles of 32 keys (the backward's key tile): row 0 a partial first tile and two fully masked ones,
    row 1 two fully valid tiles and a masked tail, row 2 a fully masked middle tile, row 3 nothing valid, row 4 a
    fully masked first tile."""
    mask = torch.ones(batch, keys, dtype=torch.bool)
    mask[0, 20:] = False
    mask[1, 64:] = False
    mask[2, 32:64] = False
    mask[3] = False
    mask[4, :32] = False
    return mask


@kernels
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention_masked_key_tiles(extension, dtype, deterministic):
    """Tiles of keys that are fully masked (skipped whole), fully valid (no test per element) and mixed, in the
    default and the deterministic backward, against the reference."""
    args = _attention_args(5, 5, 70, 24, 8, dtype=torch.float64)
    args["mask"] = _tiled_attention_mask(5, 70).to(DEVICE)
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        _check(functools.partial(F.additive_attention, backend="cuda"), reference.additive_attention, args, dtype)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@kernels
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention_backward_launches_no_aten_work(extension, dtype, deterministic):
    """The backward op is its two kernels: the only ATen ops it calls allocate its outputs and one fp32 workspace
    (torch.empty; the emulation, and torch under use_deterministic_algorithms, fill fresh memory with NaN), so no
    conversion, zeroing, sum or matmul came back into the glue, and every gradient leaves in the inputs' dtype."""
    args = on(_attention_args(2, 3, 40, 16, 8, mask="random"), DEVICE, dtype)  # two tiles of keys
    context, weights, probs = torch.ops.s2s_fast.cuda_additive_attention_fwd(*args.values())
    grad_context, grad_weights = torch.randn_like(context), torch.randn_like(weights)
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            grads = torch.ops.s2s_fast.cuda_additive_attention_bwd(grad_context, grad_weights, *args.values(), probs)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    calls = collections.Counter(event.name for event in profile.events() if event.name.startswith("aten::"))
    fills = calls.pop("aten::fill_", 0)
    assert calls == {"aten::empty": 5}, calls
    assert fills == 5 * (bool(compiled.EMULATED_GPU) + deterministic)
    assert [grad.dtype for grad in grads] == [dtype] * 4


@kernels
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "scalar"])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("batch,queries,keys,attn,value_size", [(3, 9, 40, 64, 16), (2, None, 37, 24, 8)])
def test_additive_attention_tanh_variants_within_twice_the_reference(extension, dtype, packed, batch, queries, keys,
                                                                     attn, value_size):
    """Packed (two per tanh.approx.f16x2 / bf16x2) and scalar tanh both keep the 2x-the-reference's-error rule, on
    16-byte loads (A = 64) and on the scalar path of the forward (A = 24 with Dv = 8 in bf16: still 16-byte; Tk = 37
    takes the backward's scalar score loads)."""
    args = _attention_args(batch, queries, keys, attn, value_size, dtype=torch.float64, mask="random")
    variant = functools.partial(cuda_backend.additive_attention.additive_attention, packed_tanh=packed)
    # The backend takes [B, Tq, A] queries; functional (and the bench, for these variants) hands it [B, A] as [B, 1, A].
    _check(lambda query_proj, **rest: one_query_per_row(variant, query_proj, **rest), reference.additive_attention,
           args, dtype)


@kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention_packed_tanh_reaches_both_passes(extension, dtype):
    """packed_tanh changes the float16/bfloat16 results of the forward and of the backward (the packed path runs), and
    leaves float32 untouched."""
    args = on(_attention_args(2, 3, 8, 16, 8, mask="none"), DEVICE, dtype)
    results = []
    for packed in (True, False):
        leaves = {k: v.detach().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                  for k, v in args.items()}
        context, _ = cuda_backend.additive_attention.additive_attention(**leaves, packed_tanh=packed)
        (grad_key,) = torch.autograd.grad(context, leaves["key_proj"], torch.ones_like(context))
        results.append((context, grad_key))
    (context_packed, grad_packed), (context_scalar, grad_scalar) = results
    differs = dtype != torch.float32
    assert (not torch.equal(context_packed, context_scalar)) == differs
    assert (not torch.equal(grad_packed, grad_scalar)) == differs


@kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_additive_attention_backward_misaligned_probs_take_the_scalar_loads(extension, dtype):
    """Four scores per access need Tk % 4 == 0 and 16-byte aligned fp32 scores: probabilities one float off alignment
    take the scalar accesses (the emulation fails a misaligned vector access, as a GPU faults) and give the gradients
    of the aligned call, up to the order of fp32 sums (deterministic mode: no atomics)."""
    args = on(_attention_args(2, 5, 40, 16, 8, mask="random"), DEVICE, dtype)
    context, weights, probs = torch.ops.s2s_fast.cuda_additive_attention_fwd(*args.values())
    misaligned = torch.empty(probs.numel() + 1, dtype=probs.dtype, device=probs.device)[1:].view_as(probs)
    misaligned.copy_(probs)
    assert misaligned.data_ptr() % 16 != 0 and misaligned.is_contiguous()
    grad_context, grad_weights = torch.randn_like(context), torch.randn_like(weights)
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        aligned_grads = torch.ops.s2s_fast.cuda_additive_attention_bwd(grad_context, grad_weights, *args.values(),
                                                                       probs)
        misaligned_grads = torch.ops.s2s_fast.cuda_additive_attention_bwd(grad_context, grad_weights, *args.values(),
                                                                          misaligned)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    for aligned, scalar in zip(aligned_grads, misaligned_grads):
        torch.testing.assert_close(scalar, aligned, **tolerance(dtype, summed_terms=2 * 5 * 40))


@kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_outputs_are_fully_written(extension, dtype):
    """Outputs and gradients land in memory poisoned with NaN: any element a kernel skips shows up."""
    cases = [
        (functools.partial(F.lstm_cell, backend="cuda"), _cell_args(4, 3, 5, 7)),
        (functools.partial(F.lstm_cell, backend="cuda"), _cell_args(4, 11, 5, 16)),
        (functools.partial(F.gru_cell, backend="cuda"), _cell_args(3, 11, 5, 7, lstm=False)),
        (functools.partial(F.additive_attention, backend="cuda"), _attention_args(3, 5, 40, 24, 16, mask="empty_row")),
        (functools.partial(F.lstm_layer, backend="cuda", lengths=torch.tensor([4, 0, 2], device=DEVICE)),
         dict(input=torch.randn(4, 3, 5), **{k: v for k, v in _cell_args(4, 3, 5, 9).items() if k != "input"})),
    ]
    for fn, args in cases:
        leaves = {k: v.requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                  for k, v in on(args, DEVICE, dtype).items()}
        _poison_allocator_cache()
        outputs = fn(**leaves)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for output in outputs:
            assert torch.isfinite(output).all()
        _poison_allocator_cache()
        torch.autograd.backward(outputs, [torch.randn_like(o) for o in outputs])
        for name, leaf in leaves.items():
            if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
                assert torch.isfinite(leaf.grad).all(), name


def _opcheck_cases():
    cell = on(_cell_args(4, 3, 5, 8), DEVICE)
    gru = on(_cell_args(3, 3, 5, 8, lstm=False), DEVICE)
    attention = on(_attention_args(2, 3, 7, 8, 6, mask="random"), DEVICE)
    layer_input = torch.randn(4, 3, 5, device=DEVICE)
    lengths = torch.tensor([4, 2, 0], device=DEVICE)
    layer_args = (layer_input, *list(cell.values())[1:], lengths, True, True)
    return [
        (torch.ops.s2s_fast.cuda_lstm_cell_fwd.default, (*cell.values(), True)),
        (torch.ops.s2s_fast.cuda_lstm_cell_fused_fwd.default, (*cell.values(), True)),
        (torch.ops.s2s_fast.cuda_gru_cell_fwd.default, (*gru.values(), True)),
        (torch.ops.s2s_fast.cuda_additive_attention_fwd.default, tuple(attention.values())),
        (torch.ops.s2s_fast.cuda_lstm_layer_fwd.default, layer_args),
    ]


@kernels
def test_opcheck(extension):
    for op, args in _opcheck_cases():
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        torch.library.opcheck(op, args)


@kernels
def test_torch_compile_matches_eager(extension):
    attention = on(_attention_args(4, 6, 9, 16, 8, mask="random"), DEVICE)
    cell = on(_cell_args(4, 5, 12, 16), DEVICE)

    def step(query_proj, key_proj, v, values, mask, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh):
        context, _ = F.additive_attention(query_proj, key_proj, v, values, mask, backend="cuda")
        hy, cy = F.lstm_cell(input + context.mean(), hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, backend="cuda")
        return hy.sum() + cy.sum() + context.sum()

    args = {**attention, **cell}
    leaves = {k: v.requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in args.items()}
    eager = step(**leaves)
    eager_grads = torch.autograd.grad(eager, [v for v in leaves.values() if isinstance(v, torch.Tensor)
                                              and v.requires_grad])
    compiled_step = torch.compile(step, fullgraph=True)
    result = compiled_step(**leaves)
    compiled_grads = torch.autograd.grad(result, [v for v in leaves.values() if isinstance(v, torch.Tensor)
                                                  and v.requires_grad])
    torch.testing.assert_close(result, eager, **tolerance(torch.float32))
    for ours, theirs in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(ours, theirs, **tolerance(torch.float32))


@gpu
def test_auto_picks_cuda_for_served_gpu_calls(extension):
    cell = on(_cell_args(4, 3, 5, 8), DEVICE)
    name, _ = backends.resolve("lstm_cell", DEVICE, tuple(cell.values()), backend="auto")
    assert name == "cuda"
    double = {k: v.double() if v is not None else v for k, v in cell.items()}
    name, _ = backends.resolve("lstm_cell", DEVICE, tuple(double.values()), backend="auto")
    assert name != "cuda"
