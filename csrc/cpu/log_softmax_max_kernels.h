// log_softmax(logits).max(-1) on the CPU (declared in log_softmax_max.h), compiled once per instruction set: per row
// a vectorised maximum over chunks of a few vectors, remembering the first chunk that holds it, then a vectorised sum
// of exponentials; the index is looked up in that one chunk.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "log_softmax_max.h"
#include "vec_math.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

// Elements a task should have at least: small calls stay on one thread.
constexpr int64_t kLogSoftmaxMaxGrain = 1 << 15;
// Vectors per chunk of the maximum's pass: the index search afterwards reads one chunk.
constexpr int64_t kChunkVectors = 8;

// The largest of x[begin, end) other than x[banned], scalar; NaN when one of them is.
template <typename T>
T scalar_max(const T* x, int64_t begin, int64_t end, int64_t banned) {
    T largest = -std::numeric_limits<T>::infinity();
    for (int64_t i = begin; i < end; ++i) {
        if (i == banned) continue;
        if (x[i] != x[i]) return x[i];
        if (x[i] > largest) largest = x[i];
    }
    return largest;
}

// The largest of a full chunk; NaN if the chunk holds one (at::vec::maximum propagates it).
template <typename T>
T chunk_max(const T* x) {
    constexpr int64_t width = Vec<T>::size();
    Vec<T> a = at::vec::maximum(Vec<T>::loadu(x), Vec<T>::loadu(x + width));
    Vec<T> b = at::vec::maximum(Vec<T>::loadu(x + 2 * width), Vec<T>::loadu(x + 3 * width));
    for (int64_t k = 4; k < kChunkVectors; k += 2) {
        a = at::vec::maximum(a, Vec<T>::loadu(x + k * width));
        b = at::vec::maximum(b, Vec<T>::loadu(x + (k + 1) * width));
    }
    return at::vec::vec_reduce_all<T>([](Vec<T>& u, Vec<T>& v) { return at::vec::maximum(u, v); },
                                      at::vec::maximum(a, b));
}

// exp(x) for x <= 0: ATen's exp_u20 for float (within 20 ulp, a few multiply-adds), which is within the decoding
// use's needs (a log-probability off by a few parts in a million) at about twice Sleef's speed; Sleef's for double.
template <typename T>
inline Vec<T> exp_nonpositive(const Vec<T>& x) {
    return x.exp();
}

template <>
inline Vec<float> exp_nonpositive<float>(const Vec<float>& x) {
    return x.exp_u20();
}

// sum(exp(x[i] - shift)) over the row, for finite logits no larger than shift.
template <typename T>
T exp_sum(const T* x, int64_t vocab, T shift) {
    constexpr int64_t width = Vec<T>::size();
    const Vec<T> shift_vec(shift);
    Vec<T> a(T(0)), b(T(0));
    int64_t i = 0;
    for (; i + 2 * width <= vocab; i += 2 * width) {
        a = a + exp_nonpositive(Vec<T>::loadu(x + i) - shift_vec);
        b = b + exp_nonpositive(Vec<T>::loadu(x + i + width) - shift_vec);
    }
    T sum = at::vec::vec_reduce_all<T>([](Vec<T>& u, Vec<T>& v) { return u + v; }, a + b);
    for (; i < vocab; ++i) sum += std::exp(x[i] - shift);
    return sum;
}

// What the log-softmax of one row needs: the largest logit other than the banned one and the first chunk holding it
// (earlier chunks win ties), the shift (the largest logit of all) and the sum of exp(x - shift). `finite` is false
// when the row has no finite log-probability (a NaN or +inf logit, or all -inf); the sum is then not computed.
template <typename T>
struct RowSoftmax {
    T pick;
    int64_t pick_chunk;
    T shift;
    T log_sum;
    bool finite;
};

template <typename T>
RowSoftmax<T> row_softmax(const T* x, int64_t vocab, int64_t banned) {
    constexpr int64_t chunk = kChunkVectors * Vec<T>::size();
    RowSoftmax<T> row{-std::numeric_limits<T>::infinity(), -1, T(0), T(0), false};
    bool has_nan = false;
    for (int64_t start = 0; start < vocab; start += chunk) {
        const int64_t stop = std::min(start + chunk, vocab);
        const bool scalar = stop - start < chunk || (banned >= start && banned < stop);
        const T largest = scalar ? scalar_max(x, start, stop, banned) : chunk_max(x + start);
        has_nan |= largest != largest;
        if (largest > row.pick) {
            row.pick = largest;
            row.pick_chunk = start;
        }
    }
    const T banned_logit = banned >= 0 ? x[banned] : -std::numeric_limits<T>::infinity();
    has_nan |= banned_logit != banned_logit;
    row.shift = std::max(row.pick, banned_logit);
    row.finite = !has_nan && std::isfinite(row.shift);
    if (row.finite) row.log_sum = std::log(exp_sum(x, vocab, row.shift));
    return row;
}

template <typename T>
void log_softmax_max(const LogSoftmaxMaxParams<T>& p) {
    const int64_t vocab = p.vocab;
    const int64_t banned = p.banned;
    const int64_t grain = std::max<int64_t>(1, kLogSoftmaxMaxGrain / vocab);
    at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
            const T* x = p.logits + row * vocab;
            const RowSoftmax<T> stats = row_softmax(x, vocab, banned);
            // No finite log-probability, or none allowed.
            if (!stats.finite || stats.pick == -std::numeric_limits<T>::infinity()) {
                p.best[row] = -std::numeric_limits<T>::infinity();
                p.token[row] = 0;
                continue;
            }
            int64_t token = stats.pick_chunk;
            while (token == banned || x[token] != stats.pick) ++token;
            const T best = (stats.pick - stats.shift) - stats.log_sum;
            p.best[row] = best;
            // A best that underflows to -inf (a banned shift far above it) is no choice either.
            p.token[row] = best == -std::numeric_limits<T>::infinity() ? 0 : token;
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(log_softmax_max, LogSoftmaxMaxParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
