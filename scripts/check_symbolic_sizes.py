"""Which sizes the Triton ops pin under torch.compile with dynamic shapes: no GPU needed.

Each Triton op (forward and backward) is traced by make_fx in symbolic mode on fake CUDA tensors whose sequence
sizes (T of the layers, Tq and Tk of the attention, and B) are symbols; every guard the trace adds is collected. A
guard that pins a size to one value (Eq(s0, 37)) means a compiled model recompiles for every new value of that size;
a range guard (s0 <= 32, a bucket of the block choice) is fine. Fails, naming the op, the size and the source line,
when a size that should stay symbolic is pinned. The per-step schedule of the layers is a Python loop over T (one
launch per step), so it pins T by design; it is reported, not failed: under torch.compile use the persistent schedule
(the default up to the weight size in s2s_fast.triton.utils) where T varies.

Run where torch can import triton (the CUDA-torch CI stage runs it: scripts/cuda_build.sh); the kernels are never
compiled or run. Last line: "symbolic-sizes: <N> traces, no size pinned" or the failures.
"""

from __future__ import annotations

import contextlib
import re
import sys

import torch
from torch._dynamo.source import ConstantSource
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

import s2s_fast.functional as F
from s2s_fast.triton import utils as triton_utils

# H = 384: float32 W_hh above PERSISTENT_MAX_WEIGHT_BYTES, so the public op's default would be the per-step
# schedule for a static T (the symbolic T must switch it to the persistent one).
T, B, I, H, TQ, TK, A, DV = 37, 6, 16, 384, 11, 29, 48, 24
ops = torch.ops.s2s_fast


def _layer(kind: str, persistent: bool, reverse: bool, lengths: bool):
    """The public op (validation, dispatch) and then the Triton forward and backward operators themselves (the
    autograd engine needs a real CUDA device, so the backward operator is called directly on the forward's saved
    tensors, as its registered backward does)."""
    lstm = kind == "lstm"
    gates = 4 if lstm else 3
    shapes = {"input": (T, B, I), "hx": (B, H), "weight_ih": (gates * H, I), "weight_hh": (gates * H, H),
              "bias_ih": (gates * H,), "bias_hh": (gates * H,)}
    symbolic = {("input", 0): "T", ("input", 1): "B", ("hx", 0): "B"}
    if lstm:
        shapes["cx"] = (B, H)
        symbolic[("cx", 0)] = "B"

    def call(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, cx=None):
        length_arg = None
        if lengths:
            length_arg = torch.ones(input.shape[1], dtype=torch.int64, device=input.device)
        if lstm:
            F.lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, length_arg, reverse,
                         backend="triton")
            output, hy, cy, states_h, states_c, saved = ops.triton_lstm_layer_fwd(
                input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, length_arg, reverse, persistent)
            return ops.triton_lstm_layer_bwd(torch.ones_like(output), torch.ones_like(hy), torch.ones_like(cy), input,
                                             weight_ih, weight_hh, length_arg, reverse, persistent, states_h,
                                             states_c, saved)
        F.gru_layer(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, length_arg, reverse, backend="triton")
        output, hy, states_h, saved = ops.triton_gru_layer_fwd(input, hx, weight_ih, weight_hh, bias_ih, bias_hh,
                                                               length_arg, reverse, persistent)
        return ops.triton_gru_layer_bwd(torch.ones_like(output), torch.ones_like(hy), input, weight_ih, weight_hh,
                                        length_arg, reverse, persistent, states_h, saved)

    name = (f"{kind}_layer[{'persistent' if persistent else 'per step'}{', reverse' if reverse else ''}"
            f"{', lengths' if lengths else ''}]")
    return name, call, shapes, symbolic, persistent


def _attention(one_query: bool, mask: bool):
    shapes = {"query_proj": (B, A) if one_query else (B, TQ, A), "key_proj": (B, TK, A), "v": (A,),
              "values": (B, TK, DV)}
    symbolic = {("key_proj", 0): "B", ("key_proj", 1): "Tk", ("values", 0): "B", ("values", 1): "Tk",
                ("query_proj", 0): "B"}
    if not one_query:
        symbolic[("query_proj", 1)] = "Tq"

    def call(query_proj, key_proj, v, values):
        mask_arg = None
        if mask:
            mask_arg = torch.ones(key_proj.shape[:2], dtype=torch.bool, device=key_proj.device)
        F.additive_attention(query_proj, key_proj, v, values, mask_arg, backend="triton")
        queries = query_proj.unsqueeze(1) if one_query else query_proj
        context, weights = ops.triton_additive_attention_fwd(queries, key_proj, v, values, mask_arg)
        return ops.triton_additive_attention_bwd(torch.ones_like(context), torch.ones_like(weights), queries,
                                                 key_proj, v, values, weights)

    return (f"additive_attention[{'one query' if one_query else 'many'}{', mask' if mask else ''}]", call, shapes,
            symbolic, True)


CASES = ([_layer(kind, persistent, reverse, lengths) for kind in ("lstm", "gru") for persistent in (True, False)
          for reverse, lengths in ((False, False), (True, True))]
         + [_attention(one_query, mask) for one_query in (False, True) for mask in (False, True)])


def trace(call, shapes: dict, symbolic: dict) -> tuple[list[str], dict]:
    """Guards added by tracing ``call`` on fake CUDA tensors with the named sizes symbolic; and the symbols' names."""
    env = ShapeEnv()
    mode = FakeTensorMode(shape_env=env, allow_non_fake_inputs=True)
    args = {}
    for arg, shape in shapes.items():
        dynamic = [DimDynamic.DYNAMIC if (arg, d) in symbolic else DimDynamic.STATIC for d in range(len(shape))]
        fake = mode.from_tensor(torch.empty(shape, device="meta"), source=ConstantSource(arg),
                                symbolic_context=StatelessSymbolicContext(dynamic_sizes=dynamic))
        with mode:
            args[arg] = fake.to("cuda")
    # Sizes that must agree (B of every input) are made equal by the ops' own checks: a guard between symbols.
    symbol_names = {str(args[arg].shape[dim]): size_name for (arg, dim), size_name in symbolic.items()}
    names = list(args)
    make_fx(lambda *tensors: call(**dict(zip(names, tensors))), tracing_mode="symbolic")(*args.values())
    return [str(guard.expr) for guard in env.guards], symbol_names


def pinned(guards: list[str], symbol_names: dict) -> list[str]:
    """The named sizes some guard pins to one value: an equality naming one symbol (Eq(s12, 37), Eq(s12 - 1, 36))."""
    found = []
    for guard in guards:
        symbols = set(re.findall(r"\bs\d+\b", guard))
        if guard.startswith("Eq(") and len(symbols) == 1:
            symbol = symbols.pop()
            found.append(f"{symbol_names.get(symbol, symbol)} ({guard})")
    return found


def main() -> int:
    # Fake CUDA tensors need no GPU, but torch.cuda.device(...) does: the launch helpers' device guard is the one
    # piece replaced here (under torch.compile on a GPU it runs as it is).
    triton_utils.device_guard = lambda tensor: contextlib.nullcontext()
    for module in ("lstm_layer", "gru_layer", "additive_attention", "lstm_cell", "gru_cell"):
        module = sys.modules.get(f"s2s_fast.triton.{module}")
        if module is not None and hasattr(module, "device_guard"):
            module.device_guard = triton_utils.device_guard
    failures, count = [], 0
    for name, call, shapes, symbolic, must_stay_symbolic in CASES:
        try:
            guards, symbol_names = trace(call, shapes, symbolic)
        except Exception as error:  # noqa: BLE001 - report every case, then fail
            failures.append(f"{name}: the trace failed: {type(error).__name__}: {error}")
            print(f"{name}: FAIL (trace: {type(error).__name__}: {str(error).splitlines()[0][:200]})")
            continue
        count += 1
        sizes = pinned(guards, symbol_names)
        others = [g for g in guards if not re.fullmatch(r"Eq\(s\d+, s\d+\)", g)]  # B of two inputs agreeing
        verdict = "ok" if not sizes else ("pinned (expected: one launch per step)" if not must_stay_symbolic
                                          else "FAIL")
        print(f"{name}: {verdict}; guards: {', '.join(others) or 'none'}")
        if sizes and must_stay_symbolic:
            failures.append(f"{name}: pins {', '.join(sizes)}")
    if failures:
        print("symbolic-sizes: FAIL: " + "; ".join(failures))
        return 1
    print(f"symbolic-sizes: {count} traces, no size pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
