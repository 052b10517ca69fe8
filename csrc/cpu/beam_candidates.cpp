// The cpu backend's beam_candidates: each input's best one-token extensions of its beams (beam_candidates.h), for
// beam search. Not differentiable (s2s_fast.functional refuses logits that record a gradient).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "beam_candidates.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

template <typename T>
void run_beam_candidates(const BeamCandidatesParams<T>& params) {
    S2S_FAST_CPU_CALL(beam_candidates, params);
}

std::tuple<Tensor, Tensor> beam_candidates_cpu(const Tensor& logits, const Tensor& scores, int64_t count,
                                               int64_t banned) {
    TORCH_CHECK(logits.device().is_cpu() && scores.device().is_cpu(), "cpu_beam_candidates: CPU tensors only");
    TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kDouble,
                "cpu_beam_candidates: logits must be float32 or float64, got ", logits.scalar_type());
    TORCH_CHECK(scores.scalar_type() == at::kDouble && scores.dim() == 2,
                "cpu_beam_candidates: scores must be float64 [B, K], got ", scores.scalar_type(), " ", scores.sizes());
    const int64_t inputs = scores.size(0), beams = scores.size(1);
    TORCH_CHECK(logits.dim() == 2 && logits.size(0) == inputs * beams && logits.size(1) >= 1,
                "cpu_beam_candidates: logits must be [B * K, V] = [", inputs * beams, ", V] with V >= 1, got ",
                logits.sizes());
    const int64_t vocab = logits.size(1);
    TORCH_CHECK(count >= 1 && count <= beams * vocab, "cpu_beam_candidates: count must lie in [1, K * V] = [1, ",
                beams * vocab, "], got ", count);
    TORCH_CHECK(banned >= -1 && banned < vocab, "cpu_beam_candidates: banned must be -1 (none) or a token in [0, ",
                vocab, "), got ", banned);
    const Tensor logits_c = logits.contiguous();
    const Tensor scores_c = scores.contiguous();
    Tensor top_scores = at::empty({inputs, count}, scores.options());
    Tensor top_index = at::empty({inputs, count}, scores.options().dtype(at::kLong));
    if (inputs == 0) return {top_scores, top_index};
    AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "cpu_beam_candidates", [&] {
        const BeamCandidatesParams<scalar_t> params{inputs, beams, vocab, logits_c.data_ptr<scalar_t>(),
                                                    scores_c.data_ptr<double>(), banned, count,
                                                    top_scores.data_ptr<double>(), top_index.data_ptr<int64_t>()};
        run_beam_candidates(params);
    });
    return {top_scores, top_index};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def("cpu_beam_candidates(Tensor logits, Tensor scores, int count, int banned) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_beam_candidates", &s2s_fast::cpu::beam_candidates_cpu);
}
