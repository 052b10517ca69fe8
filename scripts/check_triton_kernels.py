"""Compile every Triton kernel of s2s_fast.triton for NVIDIA GPUs without one, and print its resource usage.

The Triton interpreter that runs the kernels on CPU machines accepts code the GPU compiler rejects; this check runs
the real compiler (Triton's bundled ptxas) for each kernel in the configurations the host launchers pick, and
prints registers and local-memory (spill) bytes per thread. It needs Triton's NVIDIA backend, not a GPU.

For the attention kernels it also reads the PTX's hot loop (the innermost loop that evaluates tanh.approx, in the
bfloat16 configurations, which use the hardware tanh) and counts shuffles and barriers per tanh: tanh is the floor
of many-query attention, so the loop must not be bound by cross-lane or cross-warp reductions instead. It fails
above MAX_SHUFFLES_PER_TANH and MAX_BARRIERS_PER_TANH.

Usage: python scripts/check_triton_kernels.py [--arch 80 90]. Exits non-zero when a kernel fails to compile or a
hot loop is over those bounds.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

# The kernels must be compiled ones, not the interpreter's: drop the switch before they are defined.
os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from s2s_fast.triton import additive_attention, gru_cell, gru_layer, lstm_cell, lstm_layer, utils  # noqa: E402

TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
# Per tanh.approx in the hot loop. The attention kernels issue 0 and 1/16 (forward and backward, many queries) and
# 0 and 0 (one query); summing over A or over queries per chunk inside the loop gave 4.6 shuffles and 0.75 barriers
# per tanh in the backward.
MAX_SHUFFLES_PER_TANH = 0.25
MAX_BARRIERS_PER_TANH = 0.125
# Pointer arguments whose element type is fixed whatever the input dtype.
FIXED_POINTERS = {"mask_ptr": "i1", "scores_ptr": "fp32", "grad_scores_ptr": "fp32", "grad_key_partial_ptr": "fp32",
                  "grad_v_ptr": "fp32",
                  "lengths_ptr": "i64", "states_c_ptr": "fp32", "grad_h_ptr": "fp32", "grad_c_ptr": "fp32",
                  "barrier_ptr": "i32"}


def cases():
    """(label, kernel, dtype, constexprs) for each kernel in the configurations its launcher picks."""
    for dtype in TRITON_TYPES:
        fast_tanh = dtype == torch.bfloat16
        for queries, keys, attn in ((64, 64, 512), (1, 64, 512)):
            block_q, block_k, block_a = additive_attention._blocks(queries, keys, attn)
            blocks = dict(BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_A=block_a)
            label = f"Tq={queries} Tk={keys} A={attn}"
            yield (f"attention fwd {label}", additive_attention._additive_attention_fwd_kernel, dtype,
                   dict(HAS_MASK=True, FAST_TANH=fast_tanh, **blocks))
            yield (f"attention bwd {label}", additive_attention._additive_attention_bwd_kernel, dtype,
                   dict(FAST_TANH=fast_tanh, **blocks))
            yield (f"attention scores bwd {label}", additive_attention._additive_attention_scores_bwd_kernel, dtype,
                   dict(BLOCK_Q=block_q, BLOCK_K=block_k))
        block_b, block_h, block_k = utils.gemm_blocks(64, 512, dtype)
        gemm = dict(DOT_PRECISION="ieee", BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k)
        pointwise = dict(BLOCK_B=16, BLOCK_H=64)
        yield "lstm cell fwd B=64 H=512", lstm_cell._lstm_cell_fwd_kernel, dtype, dict(
            HAS_BIAS_IH=True, HAS_BIAS_HH=True, **gemm)
        yield "lstm cell bwd", lstm_cell._lstm_cell_bwd_kernel, dtype, pointwise
        yield "gru cell fwd B=64 H=512", gru_cell._gru_cell_fwd_kernel, dtype, dict(
            HAS_BIAS_IH=True, HAS_BIAS_HH=True, **gemm)
        yield "gru cell bwd", gru_cell._gru_cell_bwd_kernel, dtype, pointwise
        block_b, block_h, block_k = utils.persistent_blocks(64, 256, dtype)
        persistent = dict(DOT_PRECISION="ieee", BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, SPREAD=False)
        block_b, block_h, block_k = utils.spread_blocks(64, 512, dtype, utils.SPREAD_PROGRAMS_WITHOUT_GPU)
        spread = dict(DOT_PRECISION="ieee", BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, SPREAD=True)
        step = dict(gemm, SPREAD=False)
        for reverse in (0, 1):
            yield (f"lstm layer fwd step B=64 H=512 reverse={reverse}", lstm_layer._lstm_layer_fwd_kernel, dtype,
                   dict(PERSISTENT=False, REVERSE=reverse, HAS_BIAS_HH=True, HAS_LENGTHS=True, **step))
            yield (f"lstm layer fwd persistent B=64 H=256 reverse={reverse}", lstm_layer._lstm_layer_fwd_kernel,
                   dtype, dict(PERSISTENT=True, REVERSE=reverse, HAS_BIAS_HH=True, HAS_LENGTHS=True, **persistent))
            yield (f"lstm layer bwd persistent B=64 H=256 reverse={reverse}", lstm_layer._lstm_layer_bwd_kernel,
                   dtype, dict(PERSISTENT=True, REVERSE=reverse, HAS_NEXT=True, HAS_LENGTHS=True, **persistent))
            yield (f"lstm layer fwd spread B=64 H=512 reverse={reverse}", lstm_layer._lstm_layer_fwd_kernel,
                   dtype, dict(PERSISTENT=True, REVERSE=reverse, HAS_BIAS_HH=True, HAS_LENGTHS=True, **spread))
            yield (f"lstm layer bwd spread B=64 H=512 reverse={reverse}", lstm_layer._lstm_layer_bwd_kernel,
                   dtype, dict(PERSISTENT=True, REVERSE=reverse, HAS_NEXT=True, HAS_LENGTHS=True, **spread))
            for has_next in (False, True):
                yield (f"lstm layer bwd step B=64 H=512 reverse={reverse} next={has_next}",
                       lstm_layer._lstm_layer_bwd_kernel, dtype,
                       dict(PERSISTENT=False, REVERSE=reverse, HAS_NEXT=has_next, HAS_LENGTHS=True, **step))
            for label, kernel_persistent, blocks in (("step B=64 H=512", False, step),
                                                     ("persistent B=64 H=256", True, persistent),
                                                     ("spread B=64 H=512", True, spread)):
                yield (f"gru layer fwd {label} reverse={reverse}", gru_layer._gru_layer_fwd_kernel, dtype,
                       dict(PERSISTENT=kernel_persistent, REVERSE=reverse, HAS_BIAS_HH=True, HAS_LENGTHS=True,
                            **blocks))
                yield (f"gru layer bwd {label} reverse={reverse}", gru_layer._gru_layer_bwd_kernel, dtype,
                       dict(PERSISTENT=kernel_persistent, REVERSE=reverse, HAS_NEXT=True, HAS_LENGTHS=True,
                            **blocks))


def tanh_loop_costs(ptx: str) -> tuple[int, int, int] | None:
    """(tanh, shuffles, barriers) in the innermost loop of the PTX that evaluates tanh.approx, or None where no loop
    does: the instructions the hot loop of an attention kernel issues per pass."""
    lines = ptx.splitlines()
    labels = {match[1]: index for index, line in enumerate(lines) if (match := re.match(r"^(\$L__\w+):", line))}
    loops = [(labels[match[1]], index) for index, line in enumerate(lines)
             if (match := re.search(r"\bbra(?:\.uni)?\s+(\$L__\w+);", line)) and labels.get(match[1], index) < index]
    bodies = [lines[start:end] for start, end in loops if any("tanh.approx" in line for line in lines[start:end])]
    if not bodies:
        return None
    body = min(bodies, key=len)
    return tuple(sum(bool(re.search(pattern, line)) for line in body)
                 for pattern in (r"tanh\.approx", r"shfl\.sync", r"\bbar\.sync|barrier\.sync"))


def compile_kernel(kernel, dtype, constexprs, arch):
    """Compile for sm_<arch>; return (registers, local bytes) per thread read from the cubin, and the PTX."""
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + FIXED_POINTERS.get(name, TRITON_TYPES[dtype])
        else:
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", arch, 32))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([cuobjdump, "-res-usage", cubin.name], capture_output=True, text=True,
                               check=True).stdout
    registers = re.search(r"REG:(\d+)", usage)
    local = re.search(r"LOCAL:(\d+)", usage)
    return int(registers.group(1)), int(local.group(1)), compiled.asm["ptx"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    arches = parser.parse_args().arch
    failures = 0
    print(f"triton {triton.__version__}")
    print(f"{'kernel':<52} {'dtype':<9} {'arch':<6} {'regs':>5} {'local B':>8} {'hot loop: tanh, shuffles, barriers'}")
    for label, kernel, dtype, constexprs in cases():
        for arch in arches:
            try:
                registers, local, ptx = compile_kernel(kernel, dtype, constexprs, arch)
            except Exception as error:  # report every kernel that fails, then fail
                failures += 1
                print(f"{label:<52} {TRITON_TYPES[dtype]:<9} sm_{arch:<3} FAILED: {error}")
                continue
            costs = tanh_loop_costs(ptx)
            loop = ""
            if costs is not None:
                tanh, shuffles, barriers = costs
                loop = f"{tanh}, {shuffles}, {barriers}"
                if shuffles > MAX_SHUFFLES_PER_TANH * tanh or barriers > MAX_BARRIERS_PER_TANH * tanh:
                    failures += 1
                    loop += (f"  OVER the bounds ({MAX_SHUFFLES_PER_TANH} shuffles, {MAX_BARRIERS_PER_TANH} barriers "
                             "per tanh)")
            print(f"{label:<52} {TRITON_TYPES[dtype]:<9} sm_{arch:<3} {registers:>5} {local:>8} {loop}")
    if failures:
        print(f"{failures} kernel configurations failed to compile or are over the hot-loop bounds", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
