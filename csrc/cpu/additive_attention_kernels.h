// Fused additive attention kernels on the CPU (declared in additive_attention.h), compiled once per instruction set.
//
// Forward: one task per (batch row, query): its scores (each a vectorised sum over A of v * tanh, never stored), the
// masked softmax in place in the weights row, then the context as a weighted sum of value rows.
// Backward: one task per batch row: for each query, grad_scores = w * (dW - sum_k w dW) with
// dW = grad_weights + grad_context . values (w = 0 at masked keys, which are skipped), grad_values += w grad_context,
// then for each key with a nonzero grad_score, tanh again and
// g = grad_score * v * (1 - tanh^2) into grad_query and grad_key, grad_score * tanh into the row's share of grad_v.
// With `accumulate` the key, value and v gradients add to what their buffers hold (a decoder's steps).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "additive_attention.h"
#include "vec_math.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

// Work (key x width products) a forward task should have at least, so that small calls stay on one thread.
constexpr int64_t kAttentionGrainWork = 1 << 15;

// sum_a v[a] * tanh(query[a] + key[a])
template <typename T>
inline T additive_score(const T* query, const T* key, const T* v, int64_t attn) {
    constexpr int64_t kWidth = Vec<T>::size();
    Vec<T> even(T(0)), odd(T(0));
    int64_t a = 0;
    for (; a + 2 * kWidth <= attn; a += 2 * kWidth) {
        even = at::vec::fmadd(Vec<T>::loadu(v + a), tanh<T>(Vec<T>::loadu(query + a) + Vec<T>::loadu(key + a)), even);
        odd = at::vec::fmadd(Vec<T>::loadu(v + a + kWidth),
                             tanh<T>(Vec<T>::loadu(query + a + kWidth) + Vec<T>::loadu(key + a + kWidth)), odd);
    }
    for (; a < attn; a += kWidth) {
        const int64_t count = std::min(kWidth, attn - a);
        // Lanes past the end load as zero: v = 0 there adds nothing.
        even = at::vec::fmadd(Vec<T>::loadu(v + a, count),
                              tanh<T>(Vec<T>::loadu(query + a, count) + Vec<T>::loadu(key + a, count)), even);
    }
    return sum<T>(even + odd);
}

template <typename T>
void additive_attention_fwd(const AttentionForwardParams<T>& p) {
    const int64_t rows = p.batch * p.queries;
    const int64_t grain = std::max<int64_t>(1, kAttentionGrainWork / std::max<int64_t>(1, p.keys * p.attn));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
            const int64_t b = row / p.queries;
            const T* query = p.query_proj + b * p.query_strides.batch + (row - b * p.queries) * p.query_strides.row;
            const T* keys = p.key_proj + b * p.key_strides.batch;
            const T* values = p.values + b * p.value_strides.batch;
            const bool* mask = p.mask != nullptr ? p.mask + b * p.keys : nullptr;
            T* weights = p.weights + row * p.keys;
            T* context = p.context + row * p.value_size;
            std::fill(context, context + p.value_size, T(0));
            T best = -std::numeric_limits<T>::infinity();
            bool any = false;
            for (int64_t k = 0; k < p.keys; ++k) {
                if (mask != nullptr && !mask[k]) {
                    weights[k] = T(0);
                    continue;
                }
                const T score = additive_score(query, keys + k * p.key_strides.row, p.v, p.attn);
                weights[k] = score;
                best = any ? std::max(best, score) : score;
                any = true;
            }
            if (!any) continue;  // no valid key: zero weights (written above) and a zero context
            T total = T(0);
            for (int64_t k = 0; k < p.keys; ++k) {
                if (mask != nullptr && !mask[k]) continue;
                weights[k] = std::exp(weights[k] - best);
                total += weights[k];
            }
            const T scale = T(1) / total;
            for (int64_t k = 0; k < p.keys; ++k) {
                if (mask != nullptr && !mask[k]) continue;
                weights[k] *= scale;
                axpy(context, weights[k], values + k * p.value_strides.row, p.value_size);
            }
        }
    });
}

// grad_query += g, grad_key += g, grad_v += grad_score * t with t = tanh(query + key), g = grad_score * v * (1 - t^2)
template <typename T>
inline void additive_score_backward(T grad_score, const T* query, const T* key, const T* v, T* grad_query,
                                    T* grad_key, T* grad_v, int64_t attn) {
    constexpr int64_t kWidth = Vec<T>::size();
    const Vec<T> scale(grad_score);
    const Vec<T> one(T(1));
    for (int64_t a = 0; a < attn; a += kWidth) {
        const int64_t count = std::min(kWidth, attn - a);
        const Vec<T> t = tanh<T>(Vec<T>::loadu(query + a, count) + Vec<T>::loadu(key + a, count));
        const Vec<T> g = scale * Vec<T>::loadu(v + a, count) * at::vec::fnmadd(t, t, one);
        (Vec<T>::loadu(grad_query + a, count) + g).store(grad_query + a, count);
        (Vec<T>::loadu(grad_key + a, count) + g).store(grad_key + a, count);
        at::vec::fmadd(scale, t, Vec<T>::loadu(grad_v + a, count)).store(grad_v + a, count);
    }
}

template <typename T>
void additive_attention_bwd(const AttentionBackwardParams<T>& p) {
    at::parallel_for(0, p.batch, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> grad_scores(p.keys);
        for (int64_t b = begin; b < end; ++b) {
            const T* keys = p.key_proj + b * p.key_strides.batch;
            const T* values = p.values + b * p.value_strides.batch;
            T* grad_key = p.grad_key + b * p.keys * p.attn;
            T* grad_values = p.grad_values + b * p.keys * p.value_size;
            T* grad_v = p.grad_v_partial + b * p.attn;
            if (!p.accumulate) {
                std::fill(grad_key, grad_key + p.keys * p.attn, T(0));
                std::fill(grad_values, grad_values + p.keys * p.value_size, T(0));
                std::fill(grad_v, grad_v + p.attn, T(0));
            }
            for (int64_t q = 0; q < p.queries; ++q) {
                const int64_t row = b * p.queries + q;
                const T* weights = p.weights + row * p.keys;
                const T* grad_context = p.grad_context + row * p.value_size;
                const T* grad_weights = p.grad_weights != nullptr ? p.grad_weights + row * p.keys : nullptr;
                const T* query = p.query_proj + b * p.query_strides.batch + q * p.query_strides.row;
                T* grad_query = p.grad_query + row * p.attn;
                std::fill(grad_query, grad_query + p.attn, T(0));
                T weighted = T(0);
                for (int64_t k = 0; k < p.keys; ++k) {
                    if (weights[k] == T(0)) continue;
                    grad_scores[k] = (grad_weights != nullptr ? grad_weights[k] : T(0)) +
                                     dot(grad_context, values + k * p.value_strides.row, p.value_size);
                    weighted += weights[k] * grad_scores[k];
                }
                for (int64_t k = 0; k < p.keys; ++k) {
                    if (weights[k] == T(0)) continue;
                    axpy(grad_values + k * p.value_size, weights[k], grad_context, p.value_size);
                    const T grad_score = weights[k] * (grad_scores[k] - weighted);
                    if (grad_score == T(0)) continue;
                    additive_score_backward(grad_score, query, keys + k * p.key_strides.row, p.v, grad_query,
                                            grad_key + k * p.attn, grad_v, p.attn);
                }
            }
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(additive_attention_fwd, AttentionForwardParams)
S2S_FAST_CPU_INSTANTIATE(additive_attention_bwd, AttentionBackwardParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
