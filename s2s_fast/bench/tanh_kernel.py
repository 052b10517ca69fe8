"""A Triton kernel that measures the GPU's special-function rate: tanh.approx.f32 chained in registers.

Imported only on a CUDA device (it imports triton); floors.py falls back to torch.tanh when it cannot run.
"""

import triton
import triton.language as tl


@triton.jit
def tanh_chain_kernel(
    x_ptr,  # [n] float32 inputs in (-1, 1)
    out_ptr,  # [n] float32, tanh applied ITERATIONS times
    ITERATIONS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    o_x = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b_x = tl.load(x_ptr + o_x)  # [BLOCK]
    # Each lane's chain is serial; the many lanes in flight keep the special-function units busy.
    for _ in range(ITERATIONS):
        b_x = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [b_x], dtype=tl.float32, is_pure=True,
                                        pack=1)
    tl.store(out_ptr + o_x, b_x)
