"""Time one product x [M, K] @ W^T (W [N, K]) on each route the cpu backend's products can take
(csrc/cpu/products.h): ATen's float32 GEMM (W^T contiguous, as a layer's per-step operand), oneDNN's float32 linear,
and oneDNN's linear in bfloat16, the weight rounded and reordered at each call ("plain": what a product used once
pays) or rounded and packed once (mkldnn::_reorder_linear_weight: a layer's per-step products), the left operand
rounded and the result widened at each call; and "aten_medium", ATen's GEMM again while
torch.set_float32_matmul_precision("medium") is in force (the others run under "highest"), which on a CPU with AMX
is torch's own bfloat16 path. The loop runs in C++ (products.h compiled in), so no Python cost counts.

This is the sweep that set bf16_from_work, kPackedBf16FromWeight and kPlainBf16FromRows in products.h:

    python benchmarks/cpu_product_routes.py --threads 1 --output routes-t1.json

It needs a CPU that runs bfloat16 products (AVX-512 BW/VL/DQ; in hardware with AVX512-BF16 or AMX) and a torch with
oneDNN; compiling the loop takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.utils.cpp_extension import load_inline

ROUTES = ("aten", "onednn", "bf16_plain", "bf16_packed", "aten_medium")
WEIGHTS = ((256, 1024), (1024, 256), (384, 1536), (1536, 384), (512, 2048), (2048, 512), (960, 1536), (1536, 960))
ROWS = (1, 2, 4, 5, 8, 10, 16, 24, 32, 48, 64, 128)

SOURCE = r"""
#include "products.h"
#include <chrono>
using namespace s2s_fast::cpu;

// The median over 7 runs of `reps` products of the route's time per product, in microseconds.
double time_route(at::Tensor x, at::Tensor w, int64_t route, int64_t reps) {
    at::Tensor result = at::empty({x.size(0), w.size(0)}, x.options());
    const at::Tensor aten_operand = w.t().contiguous();
    const at::Tensor packed = route == 3 ? pack_weight(w.to(at::kBFloat16)) : at::Tensor();
    auto once = [&]() {
        if (route == 0 || route == 4) at::mm_out(result, x, aten_operand);
        else if (route == 1) result.copy_(onednn_linear(x, w, {}));
        else if (route == 2) result.copy_(onednn_linear(x.to(at::kBFloat16), w.to(at::kBFloat16), {}));
        else result.copy_(onednn_linear(x.to(at::kBFloat16), packed, {}));
    };
    for (int i = 0; i < 20; ++i) once();
    std::vector<double> times;
    for (int run = 0; run < 7; ++run) {
        const auto start = std::chrono::steady_clock::now();
        for (int64_t i = 0; i < reps; ++i) once();
        const auto end = std::chrono::steady_clock::now();
        times.push_back(std::chrono::duration<double, std::micro>(end - start).count() / reps);
    }
    std::sort(times.begin(), times.end());
    return times[3];
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch's threads (default 1)")
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="the row counts M, comma-separated")
    options = parser.parse_args()
    if not torch.backends.mkldnn.is_available():
        raise SystemExit("this torch has no oneDNN")
    here = os.path.dirname(os.path.abspath(__file__))
    module = load_inline("s2s_fast_product_routes", cpp_sources=[SOURCE], functions=["time_route"],
                         extra_include_paths=[os.path.join(here, os.pardir, "csrc", "cpu")], extra_cflags=["-O3"])
    torch.set_num_threads(options.threads)
    rows = []
    rows_wanted = [int(value) for value in options.rows.split(",")]
    for outputs, inputs in WEIGHTS:
        weight = torch.randn(outputs, inputs)
        for count in rows_wanted:
            x = torch.randn(count, inputs)
            work = count * inputs * outputs
            reps = min(5000, max(20, int(4e7 / work)))
            times = {}
            for index, route in enumerate(ROUTES):
                torch.set_float32_matmul_precision("medium" if route == "aten_medium" else "highest")
                times[route] = module.time_route(x, weight, index, reps)
            torch.set_float32_matmul_precision("highest")
            rows.append(dict(N=outputs, K=inputs, M=count, work=work, threads=options.threads, **times))
            print(f"W [{outputs}, {inputs}] M={count:4d} work={work / 1e6:7.2f}M " +
                  " ".join(f"{route}={value:8.1f}" for route, value in times.items()) +
                  f"  plain/aten={times['bf16_plain'] / times['aten']:.2f}"
                  f" packed/aten={times['bf16_packed'] / times['aten']:.2f}"
                  f" atenmed/plain={times['aten_medium'] / times['bf16_plain']:.2f}", flush=True)
    if options.output:
        with open(options.output, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
