// The cpu backend's log_softmax_max: each row's most probable token and its log-probability (log_softmax_max.h),
// for greedy decoding. Not differentiable (s2s_fast.functional refuses logits that record a gradient).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "log_softmax_max.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

template <typename T>
void run_log_softmax_max(const LogSoftmaxMaxParams<T>& params) {
    S2S_FAST_CPU_CALL(log_softmax_max, params);
}

std::tuple<Tensor, Tensor> log_softmax_max_cpu(const Tensor& logits, int64_t banned) {
    TORCH_CHECK(logits.device().is_cpu(), "cpu_log_softmax_max: CPU tensors only");
    TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                "cpu_log_softmax_max: float32 or float64 only, got ", logits.scalar_type());
    TORCH_CHECK(logits.dim() == 2 && logits.size(1) >= 1,
                "cpu_log_softmax_max: logits must be [B, V] with V >= 1, got ", logits.sizes());
    TORCH_CHECK(banned >= -1 && banned < logits.size(1), "cpu_log_softmax_max: banned must be -1 (none) or a token in [0, ",
                logits.size(1), "), got ", banned);
    const Tensor logits_c = logits.contiguous();
    const int64_t rows = logits.size(0);
    Tensor best = at::empty({rows}, logits.options());
    Tensor token = at::empty({rows}, logits.options().dtype(at::kLong));
    if (rows == 0) return {best, token};
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cpu_log_softmax_max", [&] {
        const LogSoftmaxMaxParams<scalar_t> params{rows, logits.size(1), logits_c.data_ptr<scalar_t>(), banned,
                                                   best.data_ptr<scalar_t>(), token.data_ptr<int64_t>()};
        run_log_softmax_max(params);
    });
    return {best, token};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def("cpu_log_softmax_max(Tensor logits, int banned) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_log_softmax_max", &s2s_fast::cpu::log_softmax_max_cpu);
}
