"""Runs every cuda-backend kernel once, forward and backward, on small awkward shapes: the workload that
scripts/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck).

Covers both LSTM cell paths (fused small batch and cuBLAS + pointwise), the GRU cell, additive attention with one and
many queries, masks with empty rows, several key tiles and unvectorised widths, and the persistent LSTM layer in both
directions with per-row lengths, in float32 and bfloat16. Exits non-zero if an output is not finite.
"""

from __future__ import annotations

import sys

import torch

from s2s_fast import functional as F


def _leaf(*shape, dtype):
    return torch.randn(*shape, device="cuda", dtype=dtype).requires_grad_()


def _backward(outputs) -> bool:
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    torch.autograd.backward(outputs, [torch.randn_like(o) for o in outputs])
    return all(bool(torch.isfinite(o).all()) for o in outputs)


def run(dtype: torch.dtype) -> list[str]:
    """Names of the cases whose outputs were not finite."""
    bad = []

    def case(name, outputs):
        # Named before its backward runs and synchronised after it: a fault (asynchronous on a GPU) is reported at
        # the case whose kernels raised it (the first GPU run's racecheck surfaced one a case later, unnamed).
        print(f"case {name} ({dtype})", flush=True)
        if not _backward(outputs):
            bad.append(f"{name} ({dtype})")
        torch.cuda.synchronize()

    for batch, input_size, hidden in ((3, 5, 7), (4, 16, 24), (12, 16, 24)):
        lstm = (_leaf(batch, input_size, dtype=dtype), _leaf(batch, hidden, dtype=dtype),
                _leaf(batch, hidden, dtype=dtype), _leaf(4 * hidden, input_size, dtype=dtype),
                _leaf(4 * hidden, hidden, dtype=dtype), _leaf(4 * hidden, dtype=dtype), _leaf(4 * hidden, dtype=dtype))
        case(f"lstm_cell B={batch} H={hidden}", F.lstm_cell(*lstm, backend="cuda"))
        gru = (lstm[0], lstm[1], _leaf(3 * hidden, input_size, dtype=dtype), _leaf(3 * hidden, hidden, dtype=dtype),
               _leaf(3 * hidden, dtype=dtype), None)
        case(f"gru_cell B={batch} H={hidden}", F.gru_cell(*gru, backend="cuda"))

    for batch, queries, keys, attn, value_size in ((3, None, 6, 5, 4), (2, 5, 40, 16, 24), (2, 3, 9, 13, 300)):
        query_shape = (batch, attn) if queries is None else (batch, queries, attn)
        mask = torch.rand(batch, keys, device="cuda") > 0.3
        mask[0] = False
        attention = (_leaf(*query_shape, dtype=dtype), _leaf(batch, keys, attn, dtype=dtype), _leaf(attn, dtype=dtype),
                     _leaf(batch, keys, value_size, dtype=dtype), mask)
        case(f"additive_attention B={batch} Tq={queries} Tk={keys}", F.additive_attention(*attention, backend="cuda"))

    steps, batch, input_size = 5, 3, 4
    for hidden in (6, 32):
        lengths = torch.tensor([steps, 0, 2], device="cuda")
        layer = (_leaf(steps, batch, input_size, dtype=dtype), _leaf(batch, hidden, dtype=dtype),
                 _leaf(batch, hidden, dtype=dtype), _leaf(4 * hidden, input_size, dtype=dtype),
                 _leaf(4 * hidden, hidden, dtype=dtype), _leaf(4 * hidden, dtype=dtype), _leaf(4 * hidden, dtype=dtype))
        for reverse in (False, True):
            case(f"lstm_layer H={hidden} reverse={reverse}",
                 F.lstm_layer(*layer, lengths=lengths, reverse=reverse, backend="cuda"))
        with torch.no_grad():
            output, _, _ = F.lstm_layer(*layer, lengths=lengths, backend="cuda")
            if not torch.isfinite(output).all():
                bad.append(f"lstm_layer inference H={hidden} ({dtype})")
    torch.cuda.synchronize()
    return bad


def main() -> int:
    torch.manual_seed(0)
    bad = run(torch.float32) + run(torch.bfloat16)
    if bad:
        print("non-finite outputs: " + "; ".join(bad))
        return 1
    print("cuda_sanitizer_driver: every kernel ran, outputs finite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
