"""Checks of the CUDA extension s2s_fast._C built against the GPU machines' torch, on a machine without a GPU.

Run by scripts/cuda_build.sh in its venv (torch 2.11.0+cu130, Python 3.12), with PYTHONPATH at the tree holding the
built library. Without a GPU nothing can launch a kernel, so it checks what the GPU machine would otherwise find
out first:

1. every operator csrc/ops.cpp defines is registered: tensor operators with a CUDA kernel, a Meta kernel and a fake
   implementation, host operators (the planner) with a kernel for every key;
2. each fake implementation's outputs (shape, dtype, strides, device) on fake CUDA tensors equal what the CUDA
   implementation allocates: the table below is written from ops.cpp, not from the fakes;
3. backward through register_autograd runs on meta tensors and gives each input its own shape and dtype;
4. torch.library.opcheck's schema, fake-tensor and autograd-registration checks pass on each operator (meta
   inputs; the checks that run kernels need a GPU and are left out by name).

Its last line is exactly `cuda-build: s2s_fast._C built against torch <version> (python <x.y>): <N> ops registered,
fake checks passed`; any failure exits 1 with what failed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

ROOT = Path(__file__).resolve().parent.parent
OPCHECK_UTILS = ("test_schema", "test_faketensor", "test_autograd_registration")
B, I, H, T, TQ, TK, A, DV = 3, 5, 7, 4, 2, 6, 8, 9
F32 = torch.float32


def defined_ops() -> dict[str, str]:
    """Operator name -> schema of every m.def in csrc/ops.cpp."""
    source = (ROOT / "csrc" / "ops.cpp").read_text()
    schemas = {}
    for match in re.finditer(r'm\.def\(\s*((?:"[^"]*"\s*)+)', source):
        schema = "".join(re.findall(r'"([^"]*)"', match.group(1)))
        schemas[schema.split("(", 1)[0]] = schema
    return schemas


def cell_inputs(make, dtype, gates, lstm=True):
    inputs = [make(B, I, dtype=dtype), make(B, H, dtype=dtype)]
    if lstm:
        inputs.append(make(B, H, dtype=dtype))
    return inputs + [make(gates * H, I, dtype=dtype), make(gates * H, H, dtype=dtype), make(gates * H, dtype=dtype),
                     make(gates * H, dtype=dtype)]


def attention_inputs(make, dtype):
    return [make(B, TQ, A, dtype=dtype), make(B, TK, A, dtype=dtype), make(A, dtype=dtype),
            make(B, TK, DV, dtype=dtype), make(B, TK, dtype=torch.bool)]


def layer_inputs(make, dtype):
    return [make(T, B, I, dtype=dtype), make(B, H, dtype=dtype), make(B, H, dtype=dtype), make(4 * H, I, dtype=dtype),
            make(4 * H, H, dtype=dtype), make(4 * H, dtype=dtype), make(4 * H, dtype=dtype),
            make(B, dtype=torch.int64)]


def cases(make, dtype):
    """(operator, arguments, expected [(shape, dtype)] of its outputs, all contiguous): what ops.cpp allocates."""
    saved = [(True, lambda *shape: shape), (False, lambda *shape: (0,))]
    rows = []
    for save, shape_of in saved:
        lstm_cell = (cell_inputs(make, dtype, 4) + [save], [((B, H), dtype), ((B, H), dtype), (shape_of(B, 4 * H), F32)])
        rows.append(("cuda_lstm_cell_fwd", *lstm_cell))
        rows.append(("cuda_lstm_cell_fused_fwd", *lstm_cell))
        rows.append(("cuda_gru_cell_fwd", cell_inputs(make, dtype, 3, lstm=False) + [save],
                     [((B, H), dtype), (shape_of(B, 4 * H), F32)]))
        rows.append(("cuda_lstm_layer_fwd", layer_inputs(make, dtype) + [False, save],
                     [((T, B, H), dtype), ((B, H), dtype), ((B, H), dtype), (shape_of(T, B, 4 * H), F32),
                      (shape_of(T, B, H), F32), (shape_of(T, B, H), dtype)]))
    rows += [
        ("cuda_lstm_cell_bwd", [make(B, H, dtype=dtype), make(B, H, dtype=dtype), make(B, H, dtype=dtype),
                                make(B, 4 * H, dtype=F32)], [((B, 4 * H), dtype), ((B, H), dtype)]),
        ("cuda_gru_cell_bwd", [make(B, H, dtype=dtype), make(B, H, dtype=dtype), make(B, 4 * H, dtype=F32)],
         [((B, 3 * H), dtype), ((B, 3 * H), dtype), ((B, H), dtype)]),
        ("cuda_additive_attention_fwd", attention_inputs(make, dtype),
         [((B, TQ, DV), dtype), ((B, TQ, TK), dtype), ((B, TQ, TK), F32)]),
        ("cuda_additive_attention_bwd", [make(B, TQ, DV, dtype=dtype), make(B, TQ, TK, dtype=dtype),
                                         *attention_inputs(make, dtype), make(B, TQ, TK, dtype=F32)],
         [((B, TQ, A), dtype), ((B, TK, A), dtype), ((A,), dtype), ((B, TK, DV), dtype)]),
        ("cuda_lstm_layer_bwd", [make(T, B, H, dtype=dtype), make(B, H, dtype=dtype), make(B, H, dtype=dtype),
                                 make(4 * H, H, dtype=dtype), make(B, dtype=torch.int64), make(B, H, dtype=dtype),
                                 make(T, B, 4 * H, dtype=F32), make(T, B, H, dtype=F32), False],
         [((T, B, 4 * H), dtype), ((B, H), dtype), ((B, H), dtype)]),
    ]
    return rows


def contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def check_registrations(schemas) -> list[str]:
    problems = []
    for name, schema in schemas.items():
        qualified = f"s2s_fast::{name}"
        has = {key: torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key)
               for key in ("CUDA", "Meta", "CompositeImplicitAutograd")}
        if "Tensor" in schema:
            missing = [key for key in ("CUDA", "Meta") if not has[key]]
            entry = torch._library.simple_registry.singleton.find(qualified)
            if entry.fake_impl.kernel is None:
                missing.append("fake implementation")
            if missing:
                problems.append(f"{name}: no {', '.join(missing)}")
        elif not has["CompositeImplicitAutograd"]:
            problems.append(f"{name}: a host operator without a kernel for every dispatch key")
    return problems


def check_fakes() -> list[str]:
    problems = []
    with FakeTensorMode():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            def make(*shape, dtype):
                return torch.empty(shape, dtype=dtype, device="cuda")

            for name, args, expected in cases(make, dtype):
                outputs = getattr(torch.ops.s2s_fast, name)(*args)
                got = [(tuple(o.shape), o.dtype, o.stride(), o.device.type) for o in outputs]
                want = [(tuple(shape), out_dtype, contiguous_strides(shape), "cuda") for shape, out_dtype in expected]
                if got != want:
                    problems.append(f"{name} ({dtype}): the fake gives {got}, the CUDA implementation allocates {want}")
    return problems


def check_meta_backward() -> list[str]:
    problems = []

    def make(*shape, dtype):
        return torch.empty(shape, dtype=dtype, device="meta")

    for name, args, _ in cases(make, torch.bfloat16):
        if not name.endswith("_fwd") or args[-1] is False:
            continue
        leaves = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        try:
            outputs = getattr(torch.ops.s2s_fast, name)(*leaves)
            differentiable = [o for o in outputs if o.requires_grad]
            torch.autograd.backward(differentiable, [torch.empty_like(o) for o in differentiable])
        except Exception as error:  # a formula or fake that does not fit: report it with the others
            problems.append(f"{name}: backward on meta tensors raised {type(error).__name__}: {error}")
            continue
        for index, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
                grad = leaf.grad
                if grad is None or grad.shape != leaf.shape or grad.dtype != leaf.dtype:
                    problems.append(f"{name}: gradient of input {index} is "
                                    f"{None if grad is None else (tuple(grad.shape), grad.dtype)}, not "
                                    f"{(tuple(leaf.shape), leaf.dtype)}")
    return problems


def check_opcheck() -> list[str]:
    problems = []

    def make(*shape, dtype):
        return torch.empty(shape, dtype=dtype, device="meta")

    for name, args, _ in cases(make, torch.float16):
        op = getattr(torch.ops.s2s_fast, name).default
        try:
            results = torch.library.opcheck(op, tuple(args), test_utils=OPCHECK_UTILS)
        except Exception as error:  # opcheck raises on the first failing check
            problems.append(f"{name}: opcheck failed: {str(error).splitlines()[0]}")
            continue
        problems += [f"{name}: opcheck {test}: {result}" for test, result in results.items() if result != "SUCCESS"]
    return problems


def main() -> int:
    import s2s_fast  # noqa: F401  (registers the fakes and autograd formulas)
    from s2s_fast.cuda import compiled

    if compiled.extension_module is None:
        print(f"cuda-build: FAIL: {compiled.MISSING_REASON}")
        return 1
    schemas = defined_ops()
    checks = {"registrations": check_registrations(schemas), "fake outputs": check_fakes(),
              "backward on meta tensors": check_meta_backward(), "opcheck": check_opcheck()}
    failed = False
    for what, problems in checks.items():
        print(f"{what}: {'ok' if not problems else 'FAIL'}")
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    if failed:
        print("cuda-build: FAIL")
        return 1
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    print(f"cuda-build: s2s_fast._C built against torch {torch.__version__} (python {python}): {len(schemas)} ops "
          "registered, fake checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
