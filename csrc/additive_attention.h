// Fused additive (Bahdanau) attention: parameters and host launchers.
//
// scores[b, q, k] = sum_a v[a] * tanh(query_proj[b, q, a] + key_proj[b, k, a]); probs = softmax over the valid
// keys (a row without one is all zeros); context = probs @ values. No [B, Tq, Tk, A] tensor is formed: the forward
// keeps the fp32 probabilities [B, Tq, Tk] for the backward, which recomputes tanh.
//
// Forward: one kernel per (batch row, tile of queries): scores, masked softmax, context.
// Backward, two kernels and nothing else: one per (batch row, tile of queries) forms grad_scores = probs * (dp -
// sum(probs * dp)) with dp = grad_weights + grad_context @ values^T (and zeroes the second kernel's sums and
// counters); one per (batch row, tile of keys, slice of A or of Dv) recomputes tanh and forms the query, key and v
// gradients, or forms grad_values = probs^T @ grad_context. Sums over tiles of keys (grad_query) and over rows and
// tiles (grad_v) are finished by the block that arrives last, so every gradient leaves the kernels in the inputs'
// dtype, accumulated in fp32. All tensors are contiguous.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace s2s_fast {

// Largest attention width the forward kernel serves (a tile of queries is held in shared memory).
constexpr int64_t kAttentionMaxWidth = 16384;
// Largest batch: the input-gradient kernel's grid puts batch rows on its third dimension.
constexpr int64_t kAttentionMaxBatch = 65535;

struct AdditiveAttentionForwardParams {
    int64_t batch;           // B
    int64_t queries;         // Tq
    int64_t keys;            // Tk
    int64_t attn;            // A
    int64_t value_size;      // Dv
    const void* query_proj;  // [B, Tq, A]
    const void* key_proj;    // [B, Tk, A]
    const void* v;           // [A]
    const void* values;      // [B, Tk, Dv]
    const bool* mask;        // [B, Tk], true = attend; nullptr: all keys
    void* context;           // [B, Tq, Dv]
    void* weights;           // [B, Tq, Tk]
    float* probs;            // [B, Tq, Tk] fp32 weights, kept for the backward
    bool packed_tanh;        // half and bfloat16: two tanh per packed tanh.approx (16-byte loads only), else one
};

struct AdditiveAttentionBackwardParams {
    int64_t batch;
    int64_t queries;
    int64_t keys;
    int64_t attn;
    int64_t value_size;
    const void* query_proj;    // [B, Tq, A]
    const void* key_proj;      // [B, Tk, A]
    const void* v;             // [A]
    const void* values;        // [B, Tk, Dv]
    const bool* mask;          // [B, Tk] or nullptr
    const float* probs;        // [B, Tq, Tk] from the forward
    const void* grad_context;  // [B, Tq, Dv]
    const void* grad_weights;  // [B, Tq, Tk]
    void* grad_query;          // [B, Tq, A]
    void* grad_key;            // [B, Tk, A]
    void* grad_v;              // [A]
    void* grad_values;         // [B, Tk, Dv]
    // fp32 scratch, from additive_attention_bwd_workspace; its parts need no initialisation.
    float* grad_scores;        // [B, Tq, Tk]
    float* grad_query_sums;    // more than one tile of keys: grad_query_tile_stride 0: [B, Tq, A], tiles of keys add
                               // into it atomically (in an order that varies); else [ceil(Tk / KeyTile), B, Tq, A],
                               // one slab per tile of keys, summed in order. nullptr with one tile of keys.
    int64_t grad_query_tile_stride;  // 0 or B * Tq * A
    float* grad_v_partial;     // [B * ceil(Tk / kAttentionBackwardKeyTile), A]: per-block sums
    unsigned* arrivals;        // [B * ceil(A / 128) + ceil(A / 128)]: blocks done, per (row, slice of A) and slice
    bool packed_tanh;          // half and bfloat16: two tanh per packed tanh.approx, else one
};

constexpr int kAttentionBackwardKeyTile = 32;

// T is float, __half or __nv_bfloat16 (instantiated in additive_attention.cu). Each returns the launch's status.
template <typename T>
cudaError_t additive_attention_fwd(const AdditiveAttentionForwardParams& params, cudaStream_t stream);
// The fp32 scratch of the backward, in floats; the caller lays out grad_scores, grad_query_sums, grad_v_partial and
// arrivals in this order in one buffer (16-byte aligned) with additive_attention_bwd_layout.
int64_t additive_attention_bwd_workspace(int64_t batch, int64_t queries, int64_t keys, int64_t attn,
                                         bool deterministic);
void additive_attention_bwd_layout(AdditiveAttentionBackwardParams& params, float* workspace, bool deterministic);
// First half of the backward: grad_scores. The caller then calls the second half.
template <typename T>
cudaError_t additive_attention_bwd_scores(const AdditiveAttentionBackwardParams& params, cudaStream_t stream);
// Second half: grad_query, grad_key and grad_v from grad_scores, recomputing tanh; grad_values.
template <typename T>
cudaError_t additive_attention_bwd_inputs(const AdditiveAttentionBackwardParams& params, cudaStream_t stream);

}  // namespace s2s_fast
