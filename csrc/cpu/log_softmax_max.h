// The most probable token of each row of logits and its log-probability, in one read of the row for the maximum and
// one for the sum of exponentials: log_softmax(logits).max(-1) without writing the [rows, vocab] log-probabilities
// (greedy decoding's choice of the next token). Parameters and kernel declarations; T is float or double.
//
// Per row x: m = max(x), s = sum(exp(x - m)); best = (x[token] - m) - log(s) for token the first index of the
// largest x other than `banned` (a token held off, whose log-probability counts as -inf but whose probability stays
// in the sum, as when log_softmax's output is masked). A row holding NaN or +inf, or only -inf, has no finite
// log-probability: best is -inf and token 0, as is every row whose best would be -inf. The token is the first index
// of the largest logit: where rounding makes the log-probabilities of two logits equal, torch's log_softmax and max
// take the first of them, this the larger logit.
#pragma once

#include <cstdint>

#include "capability.h"

namespace s2s_fast::cpu {

template <typename T>
struct LogSoftmaxMaxParams {
    int64_t rows;
    int64_t vocab;      // >= 1
    const T* logits;    // [rows, vocab], contiguous
    int64_t banned;     // a token in [0, vocab) never chosen, or -1
    T* best;            // [rows] the chosen token's log-probability
    int64_t* token;     // [rows]
};

S2S_FAST_CPU_DECLARE_KERNELS(template <typename T> void log_softmax_max(const LogSoftmaxMaxParams<T>& params);)

}  // namespace s2s_fast::cpu
