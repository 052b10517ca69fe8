// Beam search's ranking of one-token extensions, without writing the [B*K, V] log-probabilities or their float64 sums
// with the beams' scores: parameters and kernel declarations; T (the logits) is float or double.
//
// Input b's beam k, extended by token v, scores total = scores[b, k] + double(lp[b*K + k, v]), where lp is the row's
// log-softmax as log_softmax_max.h computes it ((x - shift) - log_sum in T; -inf for every token of a row without a
// finite log-probability, and for the banned token). Each input gets the `count` largest totals, best first, and
// their flat indices k * V + v; NaN ranks above every number (as in torch.topk), and of equal totals the smaller
// index comes first.
#pragma once

#include <cstdint>

#include "capability.h"

namespace s2s_fast::cpu {

template <typename T>
struct BeamCandidatesParams {
    int64_t inputs;         // B
    int64_t beams;          // K
    int64_t vocab;          // V >= 1
    const T* logits;        // [B * K, V], contiguous
    const double* scores;   // [B, K], contiguous
    int64_t banned;         // a token in [0, V) no extension takes, or -1
    int64_t count;          // extensions kept per input, in [1, K * V]
    double* top_scores;     // [B, count]
    int64_t* top_index;     // [B, count]
};

S2S_FAST_CPU_DECLARE_KERNELS(template <typename T> void beam_candidates(const BeamCandidatesParams<T>& params);)

}  // namespace s2s_fast::cpu
