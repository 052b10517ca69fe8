// The cpu backend's dropout: input * mask / (1 - p) with the counter-based mask of dropout.h. The seed is a 0-d
// int64 tensor (drawn from torch's generator by the caller, so that torch.manual_seed repeats a run and a compiled
// graph draws a new one each call); the backward is this same operator on the gradient with the same seed.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

#include "dropout.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

template <typename T>
void run_dropout(const DropoutParams<T>& params) {
    S2S_FAST_CPU_CALL(dropout, params);
}

Tensor dropout_cpu(const Tensor& input, double p, const Tensor& seed) {
    TORCH_CHECK(input.device().is_cpu(), "cpu_dropout: CPU tensors only");
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                "cpu_dropout: float32 or float64 only, got ", input.scalar_type());
    TORCH_CHECK(std::isfinite(p) && p >= 0.0 && p < 1.0, "cpu_dropout: p must lie in [0, 1), got ", p);
    TORCH_CHECK(seed.dim() == 0 && seed.scalar_type() == at::kLong && seed.device().is_cpu(),
                "cpu_dropout: seed must be a 0-d int64 CPU tensor, got ", seed.scalar_type(), " ", seed.sizes());
    const Tensor input_c = input.contiguous();
    Tensor output = at::empty(input.sizes(), input.options().memory_format(at::MemoryFormat::Contiguous));
    // p * 2^32 rounded down, at most 2^32 - 1 (p < 1): hashes below it are dropped.
    const double scaled = std::floor(p * 4294967296.0);
    const uint32_t threshold = scaled >= 4294967295.0 ? 4294967295U : static_cast<uint32_t>(scaled);
    const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_dropout", [&] {
        const DropoutParams<scalar_t> params{input_c.numel(), input_c.data_ptr<scalar_t>(),
                                             output.data_ptr<scalar_t>(), key, threshold,
                                             static_cast<scalar_t>(1.0 / (1.0 - p))};
        run_dropout(params);
    });
    return output;
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def("cpu_dropout(Tensor input, float p, Tensor seed) -> Tensor");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_dropout", &s2s_fast::cpu::dropout_cpu);
}
