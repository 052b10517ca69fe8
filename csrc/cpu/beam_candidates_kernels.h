// Beam search's candidates on the CPU (declared in beam_candidates.h), compiled once per instruction set: each
// input's rows normalised as log_softmax_max does (row_softmax), then one scan of its K * V totals keeping the best
// `count` in a heap whose worst entry is the bar a total must clear.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "beam_candidates.h"
#include "log_softmax_max_kernels.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

// The relative margin of the chunk test against rounding: many ulps of T.
template <typename T>
constexpr double kBarMargin = 1e-12;
template <>
constexpr double kBarMargin<float> = 1e-5;

struct Candidate {
    double total;
    int64_t index;
};

// a ranks before b: a larger total (NaN above every number), or an equal total at a smaller index.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
    const bool a_nan = std::isnan(a.total), b_nan = std::isnan(b.total);
    if (a_nan != b_nan) return a_nan;
    if (!a_nan && a.total != b.total) return a.total > b.total;
    return a.index < b.index;
}

// The best `count` candidates seen, as a heap whose front is the worst of them.
class BestCandidates {
   public:
    explicit BestCandidates(int64_t count) : count_(count) { heap_.reserve(count); }

    void reset() { heap_.clear(); }

    // Candidates arrive in increasing index order, so one equal to the worst kept never ranks before it.
    void offer(double total, int64_t index) {
        const Candidate candidate{total, index};
        if (static_cast<int64_t>(heap_.size()) < count_) {
            heap_.push_back(candidate);
            std::push_heap(heap_.begin(), heap_.end(), ranks_before);
        } else if (ranks_before(candidate, heap_.front())) {
            std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
            heap_.back() = candidate;
            std::push_heap(heap_.begin(), heap_.end(), ranks_before);
        }
    }

    // Whether a total could enter: the heap is not full, or the total beats its worst (ignoring the index).
    bool could_enter(double total) const {
        if (static_cast<int64_t>(heap_.size()) < count_) return true;
        const double bar = heap_.front().total;
        return std::isnan(total) ? !std::isnan(bar) : total >= bar;
    }

    // The total a candidate must reach to enter: -inf while the heap is not full.
    double bar() const {
        return static_cast<int64_t>(heap_.size()) < count_ ? -std::numeric_limits<double>::infinity()
                                                           : heap_.front().total;
    }

    // Best first.
    void write(double* totals, int64_t* indices) {
        std::sort_heap(heap_.begin(), heap_.end(), ranks_before);
        for (size_t i = 0; i < heap_.size(); ++i) {
            totals[i] = heap_[i].total;
            indices[i] = heap_[i].index;
        }
    }

   private:
    int64_t count_;
    std::vector<Candidate> heap_;
};

template <typename T>
void beam_candidates(const BeamCandidatesParams<T>& p) {
    const int64_t vocab = p.vocab;
    const int64_t banned = p.banned;
    const int64_t per_input = p.beams * vocab;
    const int64_t grain = std::max<int64_t>(1, kLogSoftmaxMaxGrain / per_input);
    at::parallel_for(0, p.inputs, grain, [&](int64_t begin, int64_t end) {
        BestCandidates best(p.count);
        for (int64_t input = begin; input < end; ++input) {
            best.reset();
            for (int64_t beam = 0; beam < p.beams; ++beam) {
                const int64_t row = input * p.beams + beam;
                const T* x = p.logits + row * vocab;
                const double score = p.scores[row];
                const int64_t offset = beam * vocab;
                const RowSoftmax<T> stats = row_softmax(x, vocab, banned);
                const double impossible = score + static_cast<double>(-std::numeric_limits<T>::infinity());
                if (!stats.finite) {
                    // Every token's log-probability is -inf: totals of score - inf (NaN for score +inf).
                    if (!best.could_enter(impossible)) continue;
                    for (int64_t token = 0; token < vocab; ++token) best.offer(impossible, offset + token);
                    continue;
                }
                // The row's best total (its largest allowed logit's): a row that cannot enter is skipped whole.
                const double row_best =
                    stats.pick == -std::numeric_limits<T>::infinity()
                        ? impossible
                        : score + static_cast<double>((stats.pick - stats.shift) - stats.log_sum);
                if (!best.could_enter(row_best) && !best.could_enter(impossible)) continue;
                constexpr int64_t chunk = kChunkVectors * Vec<T>::size();
                for (int64_t start = 0; start < vocab; start += chunk) {
                    const int64_t stop = std::min(start + chunk, vocab);
                    // A full chunk without the banned token whose largest logit cannot reach the bar is skipped: the
                    // bar in logit units, lowered by a margin well past the rounding of the total's arithmetic.
                    const double bar = best.bar();
                    if (stop - start == chunk && !(banned >= start && banned < stop) && std::isfinite(bar)) {
                        const double logit_bar = (bar - score) + stats.log_sum + stats.shift;
                        const double margin = kBarMargin<T> * (std::abs(logit_bar) + std::abs(stats.shift) +
                                                                std::abs(stats.log_sum) + 1.0);
                        if (static_cast<double>(chunk_max(x + start)) < logit_bar - margin) continue;
                    }
                    for (int64_t token = start; token < stop; ++token) {
                        const double total =
                            token == banned ? impossible
                                            : score + static_cast<double>((x[token] - stats.shift) - stats.log_sum);
                        if (best.could_enter(total)) best.offer(total, offset + token);
                    }
                }
            }
            best.write(p.top_scores + input * p.count, p.top_index + input * p.count);
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(beam_candidates, BeamCandidatesParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
