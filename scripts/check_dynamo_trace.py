"""Whether Dynamo traces every public op of s2s_fast.functional whole under the GPU machines' torch: no GPU needed.

The test suite compiles the ops under the torch CI installs (tests/test_compile.py); this runs under the one the GPU
machines run (scripts/cuda_build.sh's venv, torch 2.11), whose Dynamo traces less: the first GPU run (2026-12-04)
found every op breaking its graph on torch.amp.is_autocast_available, which 2.13's Dynamo traces. Each op runs on
float32 CPU tensors on the reference backend, compiled with fullgraph=True (a graph break fails) and the eager
backend (no code generation: the trace is what is checked), forward and backward, with and without autocast, and
must equal the eager call. The ops' own code above the backends is the same for every backend and device.

Last line: "dynamo-trace: <N> traces whole under torch <version>" or the failures.
"""

from __future__ import annotations

import sys

import torch

import s2s_fast.functional as F

T, B, I, H, TQ, TK, A, DV = 5, 3, 4, 6, 2, 7, 8, 5


def _cases() -> dict:
    def leaf(*shape):
        return torch.randn(*shape, requires_grad=True)

    lengths = torch.tensor([T, 0, 2])
    mask = torch.tensor([[True] * TK, [True] * 3 + [False] * (TK - 3), [False] * TK])
    lstm_cell = (leaf(B, I), leaf(B, H), leaf(B, H), leaf(4 * H, I), leaf(4 * H, H), leaf(4 * H), leaf(4 * H))
    gru_cell = (leaf(B, I), leaf(B, H), leaf(3 * H, I), leaf(3 * H, H), leaf(3 * H), leaf(3 * H))
    lstm_layer = (leaf(T, B, I),) + lstm_cell[1:]
    gru_layer = (leaf(T, B, I),) + gru_cell[1:]
    return {
        "lstm_cell": (F.lstm_cell, lstm_cell, {}),
        "gru_cell": (F.gru_cell, gru_cell, {}),
        "lstm_layer": (F.lstm_layer, lstm_layer, {"lengths": lengths, "reverse": True}),
        "gru_layer": (F.gru_layer, gru_layer, {"lengths": lengths}),
        "additive_attention": (F.additive_attention, (leaf(B, TQ, A), leaf(B, TK, A), leaf(A), leaf(B, TK, DV)),
                               {"mask": mask}),
        "additive_attention one query": (F.additive_attention, (leaf(B, A), leaf(B, TK, A), leaf(A), leaf(B, TK, DV)),
                                         {"mask": mask}),
        "dot_attention": (F.dot_attention, (leaf(B, TQ, DV), leaf(B, TK, DV), leaf(B, TK, DV)), {"mask": mask}),
        "linear": (F.linear, (leaf(B, T, I), leaf(H, I), leaf(H)), {}),
    }


def _outputs_and_grads(fn, args, kwargs) -> list[torch.Tensor]:
    outputs = fn(*args, **kwargs, backend="reference")
    outputs = [o for o in (outputs if isinstance(outputs, tuple) else (outputs,)) if o.is_floating_point()]
    loss = sum((o.float() * (k + 1)).sum() for k, o in enumerate(outputs))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return [o.detach() for o in outputs] + list(torch.autograd.grad(loss, leaves))


def main() -> int:
    torch.manual_seed(0)
    failures, traces = [], 0
    for name, (fn, args, kwargs) in _cases().items():
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        for autocast in (False, True):
            label = f"{name}{' under autocast (bfloat16)' if autocast else ''}"
            torch._dynamo.reset()
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    expected = _outputs_and_grads(fn, args, kwargs)
                    got = _outputs_and_grads(compiled, args, kwargs)
            except Exception as error:  # a graph break (fullgraph) or a failure inside the trace
                failures.append(f"{label}: {type(error).__name__}: {' '.join(str(error).split())[:400]}")
                continue
            traces += 1
            if len(got) != len(expected) or not all(torch.allclose(g, e, rtol=1e-2 if autocast else 1e-5, atol=1e-5)
                                                    for g, e in zip(got, expected)):
                failures.append(f"{label}: the compiled call differs from the eager one")
    if failures:
        print("\n".join(failures))
        print(f"dynamo-trace: FAIL ({len(failures)} of {traces + len(failures)} under torch {torch.__version__})")
        return 1
    print(f"dynamo-trace: {traces} traces whole under torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
