// Fused additive (Bahdanau) attention on the CPU: parameters and kernel declarations.
//
// scores[b, q, k] = sum_a v[a] * tanh(query_proj[b, q, a] + key_proj[b, k, a]); weights = softmax over the valid
// keys (a row without one is all zeros); context = weights @ values. No [B, Tq, Tk, A] tensor is formed: the
// forward computes each score's tanh values in registers, the backward recomputes them from the weights it is given.
// Masked keys cost nothing in either. Rows of A or Dv elements are contiguous; query_proj, key_proj and values may
// have any batch and row strides (a time-major encoder output read batch-first, say); every other tensor is
// contiguous. T is float or double.
#pragma once

#include <cstdint>

#include "capability.h"

namespace s2s_fast::cpu {

// Batch and row strides (in elements) of a [B, rows, width] tensor whose rows are contiguous.
struct RowStrides {
    int64_t batch;
    int64_t row;
};

template <typename T>
struct AttentionForwardParams {
    int64_t batch;        // B
    int64_t queries;      // Tq
    int64_t keys;         // Tk
    int64_t attn;         // A
    int64_t value_size;   // Dv
    const T* query_proj;  // [B, Tq, A], strides query_strides
    const T* key_proj;    // [B, Tk, A], strides key_strides
    const T* v;           // [A]
    const T* values;      // [B, Tk, Dv], strides value_strides
    const bool* mask;     // [B, Tk], true = attend; nullptr: all keys
    T* context;           // [B, Tq, Dv]
    T* weights;           // [B, Tq, Tk]
    RowStrides query_strides;
    RowStrides key_strides;
    RowStrides value_strides;
};

template <typename T>
struct AttentionBackwardParams {
    int64_t batch;
    int64_t queries;
    int64_t keys;
    int64_t attn;
    int64_t value_size;
    const T* query_proj;    // [B, Tq, A], strides query_strides
    const T* key_proj;      // [B, Tk, A], strides key_strides
    const T* v;             // [A]
    const T* values;        // [B, Tk, Dv], strides value_strides
    const T* weights;       // [B, Tq, Tk] from the forward (zero at masked keys)
    const T* grad_context;  // [B, Tq, Dv]
    const T* grad_weights;  // [B, Tq, Tk], or nullptr: zero
    T* grad_query;          // [B, Tq, A]
    T* grad_key;            // [B, Tk, A]
    T* grad_values;         // [B, Tk, Dv]
    T* grad_v_partial;      // [B, A]: each batch row's share of grad_v, summed by the caller
    RowStrides query_strides;
    RowStrides key_strides;
    RowStrides value_strides;
    // Add to grad_key, grad_values and grad_v_partial instead of overwriting them (a decoder's steps, one query each,
    // summing into one buffer); grad_query is overwritten either way.
    bool accumulate = false;
};

// One definition per instruction set the library is built with (capability.h), in kernels_*.cpp.
S2S_FAST_CPU_DECLARE_KERNELS(
    template <typename T> void additive_attention_fwd(const AttentionForwardParams<T>& params);
    template <typename T> void additive_attention_bwd(const AttentionBackwardParams<T>& params);)

// The kernels of the instruction set capability() chose (for the bindings).
template <typename T>
inline void run_additive_attention_fwd(const AttentionForwardParams<T>& params) {
    S2S_FAST_CPU_CALL(additive_attention_fwd, params);
}

template <typename T>
inline void run_additive_attention_bwd(const AttentionBackwardParams<T>& params) {
    S2S_FAST_CPU_CALL(additive_attention_bwd, params);
}

}  // namespace s2s_fast::cpu
