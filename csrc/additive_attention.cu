// Fused additive attention kernels: forward (scores, masked softmax, context) and backward (grad_scores, then the
// tanh-recomputing input gradients). See additive_attention.h for the contract.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "additive_attention.h"
#include "common.h"

namespace s2s_fast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// Queries whose context one pass accumulates: kContextQueries * VEC fp32 accumulators per lane.
constexpr int kContextQueries = 4;
// The input-gradient kernel: one thread per column a, a tile of keys in registers, queries staged in chunks.
constexpr int kBackwardThreads = 128;
constexpr int kBackwardQueryChunk = 32;

// The smallest power of two of lanes (1..32) covering `vectors` 16-byte vectors of a row.
__host__ __device__ inline int lanes_for(int64_t vectors) {
    int lanes = 1;
    while (lanes < kWarpSize && lanes < vectors) lanes *= 2;
    return lanes;
}

__host__ __device__ inline int64_t context_chunk(int64_t value_size, int vec) {
    return int64_t(lanes_for(ceil_div(value_size, vec))) * vec;
}

template <int QT>
constexpr int kContextQueriesFor = QT < kContextQueries ? QT : kContextQueries;

// Forward shared memory in floats: the query tile [QT, A_pad] (reused for the context reduction) and v [A_pad].
template <int QT>
__host__ __device__ inline int64_t forward_shared_floats(int64_t attn, int64_t value_size, int vec) {
    const int64_t attn_pad = round_up(attn, 4);
    const int64_t reduction = int64_t(kWarps) * kContextQueriesFor<QT> * context_chunk(value_size, vec);
    const int64_t query_tile = QT * attn_pad;
    return (query_tile > reduction ? query_tile : reduction) + attn_pad;
}

template <int QT>
__host__ __device__ inline int64_t scores_backward_shared_floats(int64_t value_size) {
    return QT * round_up(value_size, 4);
}

__device__ __forceinline__ bool key_is_valid(const bool* mask_row, int64_t k) {
    return mask_row == nullptr || mask_row[k];
}

// Masked softmax of one row in place (fp32), also written as T; a row with no valid key becomes zeros. SV = 4: each
// lane takes four consecutive scores per access (keys % 4 == 0, the row 16-byte aligned, weight_row 4 * sizeof(T)).
template <typename T, int SV>
__device__ void softmax_row(float* row, T* weight_row, const bool* mask_row, int64_t keys, int lane) {
    float row_max = -INFINITY;
    for (int64_t k = int64_t(lane) * SV; k < keys; k += kWarpSize * SV) {
        float b_score[SV];
        load_floats<float, SV>(row + k, b_score);
#pragma unroll
        for (int i = 0; i < SV; ++i)
            if (key_is_valid(mask_row, k + i)) row_max = fmaxf(row_max, b_score[i]);
    }
    row_max = warp_max(row_max);
    float total = 0.0f;
    for (int64_t k = int64_t(lane) * SV; k < keys; k += kWarpSize * SV) {
        float b_score[SV];
        load_floats<float, SV>(row + k, b_score);
#pragma unroll
        for (int i = 0; i < SV; ++i)
            if (key_is_valid(mask_row, k + i)) total += __expf(b_score[i] - row_max);
    }
    total = warp_sum(total);
    const float scale = total > 0.0f ? 1.0f / total : 0.0f;
    for (int64_t k = int64_t(lane) * SV; k < keys; k += kWarpSize * SV) {
        float b_prob[SV];
        load_floats<float, SV>(row + k, b_prob);
#pragma unroll
        for (int i = 0; i < SV; ++i)
            b_prob[i] = key_is_valid(mask_row, k + i) ? __expf(b_prob[i] - row_max) * scale : 0.0f;
        store_floats<float, SV>(row + k, b_prob);
        store_floats<T, SV>(weight_row + k, b_prob);
    }
}

// grad_row = prob_row * (grad_row - sum(prob_row * grad_row)) for one row, SV scores per access as softmax_row.
template <int SV>
__device__ void softmax_backward_row(float* grad_row, const float* prob_row, int64_t keys, int lane) {
    float total = 0.0f;
    for (int64_t k = int64_t(lane) * SV; k < keys; k += kWarpSize * SV) {
        float b_prob[SV], b_grad[SV];
        load_floats<float, SV>(prob_row + k, b_prob);
        load_floats<float, SV>(grad_row + k, b_grad);
#pragma unroll
        for (int i = 0; i < SV; ++i) total = fmaf(b_prob[i], b_grad[i], total);
    }
    total = warp_sum(total);
    for (int64_t k = int64_t(lane) * SV; k < keys; k += kWarpSize * SV) {
        float b_prob[SV], b_grad[SV];
        load_floats<float, SV>(prob_row + k, b_prob);
        load_floats<float, SV>(grad_row + k, b_grad);
#pragma unroll
        for (int i = 0; i < SV; ++i) b_grad[i] = b_prob[i] * (b_grad[i] - total);
        store_floats<float, SV>(grad_row + k, b_grad);
    }
}

// PACKED: tanh of two elements in one packed instruction (half and bfloat16, VEC even), else one scalar tanh each.
// One block per (batch row b, tile of QT queries). Warps take keys in turn; within a warp, groups of lanes each
// take one key and split A (16-byte loads of key_proj), the query tile and v sit in shared memory as fp32.
template <typename T, int QT, int VEC, bool PACKED>
__global__ void __launch_bounds__(kThreads, 2)
    additive_attention_fwd_kernel(const AdditiveAttentionForwardParams params) {
    constexpr int CQ = kContextQueriesFor<QT>;
    float* smem = dynamic_shared<float>();
    const int64_t attn = params.attn, keys = params.keys, queries = params.queries, value_size = params.value_size;
    const int64_t attn_pad = round_up(attn, 4);
    const int64_t query_tiles = ceil_div(queries, QT);
    const int64_t b = blockIdx.x / query_tiles;
    const int64_t q0 = (blockIdx.x % query_tiles) * QT;
    const int tile_queries = int(queries - q0 < QT ? queries - q0 : QT);
    const int warp = threadIdx.x / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    const int64_t chunk = context_chunk(value_size, VEC);
    float* q_s = smem;  // [QT, attn_pad]; later the context reduction buffer [kWarps, CQ, chunk]
    float* v_s = smem + forward_shared_floats<QT>(attn, value_size, VEC) - attn_pad;  // [attn_pad]

    const T* __restrict__ query_proj = static_cast<const T*>(params.query_proj) + (b * queries + q0) * attn;
    for (int64_t index = threadIdx.x; index < QT * attn_pad; index += kThreads) {
        const int64_t qi = index / attn_pad, a = index % attn_pad;
        q_s[index] = (qi < tile_queries && a < attn) ? to_float(query_proj[qi * attn + a]) : 0.0f;
    }
    for (int64_t a = threadIdx.x; a < attn_pad; a += kThreads)
        v_s[a] = a < attn ? to_float(static_cast<const T*>(params.v)[a]) : 0.0f;
    __syncthreads();

    const bool* mask_row = params.mask == nullptr ? nullptr : params.mask + b * keys;
    float* probs = params.probs + (b * queries + q0) * keys;  // rows of this tile: scores first, then softmax
    {
        const int lanes_per_key = lanes_for(ceil_div(attn, VEC));
        const int keys_per_warp = kWarpSize / lanes_per_key;
        const int key_lane = lane / lanes_per_key, sub = lane % lanes_per_key;
        const T* __restrict__ key_proj = static_cast<const T*>(params.key_proj) + b * keys * attn;
        for (int64_t k_first = int64_t(warp) * keys_per_warp; k_first < keys; k_first += kWarps * keys_per_warp) {
            const int64_t k = k_first + key_lane;
            float acc[QT];
#pragma unroll
            for (int qi = 0; qi < QT; ++qi) acc[qi] = 0.0f;
            if (k < keys && key_is_valid(mask_row, k)) {
                const T* p_key = key_proj + k * attn;
                for (int64_t a = int64_t(sub) * VEC; a < attn; a += int64_t(lanes_per_key) * VEC) {
                    float b_key[VEC], b_v[VEC];
                    load_floats<T, VEC>(p_key + a, b_key);
                    load_shared_floats<VEC>(v_s + a, b_v);
#pragma unroll
                    for (int qi = 0; qi < QT; ++qi) {
                        if (qi < tile_queries) {
                            float b_q[VEC];
                            load_shared_floats<VEC>(q_s + qi * attn_pad + a, b_q);
                            if constexpr (PACKED) {
#pragma unroll
                                for (int i = 0; i < VEC; i += 2) {
                                    float t0 = b_q[i] + b_key[i], t1 = b_q[i + 1] + b_key[i + 1];
                                    tanh_approx_packed<T>(t0, t1);
                                    acc[qi] = fmaf(b_v[i + 1], t1, fmaf(b_v[i], t0, acc[qi]));
                                }
                            } else {
#pragma unroll
                                for (int i = 0; i < VEC; ++i)
                                    acc[qi] = fmaf(b_v[i], tanh_for<T>(b_q[i] + b_key[i]), acc[qi]);
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int qi = 0; qi < QT; ++qi)
                if (qi < tile_queries) acc[qi] = group_sum(acc[qi], lanes_per_key);
            if (sub == 0 && k < keys) {
#pragma unroll
                for (int qi = 0; qi < QT; ++qi)
                    if (qi < tile_queries) probs[qi * keys + k] = acc[qi];
            }
        }
    }
    __syncthreads();

    T* weights = static_cast<T*>(params.weights) + (b * queries + q0) * keys;
    // Four scores per access where every row is aligned for it (the same choice for the whole block).
    const bool vector_scores = keys % 4 == 0 && is_aligned(probs, 16) && is_aligned(weights, int(4 * sizeof(T)));
    for (int qi = warp; qi < tile_queries; qi += kWarps) {
        if (vector_scores)
            softmax_row<T, 4>(probs + qi * keys, weights + qi * keys, mask_row, keys, lane);
        else
            softmax_row<T, 1>(probs + qi * keys, weights + qi * keys, mask_row, keys, lane);
    }
    __syncthreads();

    const int lanes_per_row = lanes_for(ceil_div(value_size, VEC));
    const int rows_per_warp = kWarpSize / lanes_per_row;
    const int key_lane = lane / lanes_per_row, sub = lane % lanes_per_row;
    const T* __restrict__ values = static_cast<const T*>(params.values) + b * keys * value_size;
    T* context = static_cast<T*>(params.context) + (b * queries + q0) * value_size;
    float* reduce_s = smem;  // [kWarps, CQ, chunk]
    for (int qg = 0; qg < tile_queries; qg += CQ) {
        for (int64_t d0 = 0; d0 < value_size; d0 += chunk) {
            const int64_t d = d0 + int64_t(sub) * VEC;
            float acc[CQ][VEC];
#pragma unroll
            for (int c = 0; c < CQ; ++c)
#pragma unroll
                for (int i = 0; i < VEC; ++i) acc[c][i] = 0.0f;
            if (d < value_size) {
                for (int64_t k = int64_t(warp) * rows_per_warp + key_lane; k < keys; k += kWarps * rows_per_warp) {
                    float prob[CQ];
                    bool any = false;
#pragma unroll
                    for (int c = 0; c < CQ; ++c) {
                        prob[c] = qg + c < tile_queries ? probs[(qg + c) * keys + k] : 0.0f;
                        any = any || prob[c] != 0.0f;
                    }
                    // Masked keys have probability 0: their values need not be read.
                    if (!any) continue;
                    float b_value[VEC];
                    load_floats<T, VEC>(values + k * value_size + d, b_value);
#pragma unroll
                    for (int c = 0; c < CQ; ++c)
#pragma unroll
                        for (int i = 0; i < VEC; ++i) acc[c][i] = fmaf(prob[c], b_value[i], acc[c][i]);
                }
            }
#pragma unroll
            for (int c = 0; c < CQ; ++c)
#pragma unroll
                for (int i = 0; i < VEC; ++i)
                    for (int offset = lanes_per_row; offset < kWarpSize; offset *= 2)
                        acc[c][i] += __shfl_xor_sync(kFullWarpMask, acc[c][i], offset);
            if (key_lane == 0 && d < value_size) {
#pragma unroll
                for (int c = 0; c < CQ; ++c)
#pragma unroll
                    for (int i = 0; i < VEC; ++i) reduce_s[(warp * CQ + c) * chunk + sub * VEC + i] = acc[c][i];
            }
            __syncthreads();
            for (int64_t index = threadIdx.x; index < CQ * chunk; index += kThreads) {
                const int c = int(index / chunk);
                const int64_t e = index % chunk;
                if (qg + c < tile_queries && d0 + e < value_size) {
                    float sum = 0.0f;
#pragma unroll
                    for (int w = 0; w < kWarps; ++w) sum += reduce_s[(w * CQ + c) * chunk + e];
                    context[(qg + c) * value_size + d0 + e] = from_float<T>(sum);
                }
            }
            __syncthreads();
        }
    }
}

// One block per (batch row b, tile of QT queries): dp = grad_weights + grad_context @ values^T over the valid keys,
// then grad_scores = probs * (dp - sum_k probs * dp) per row (zero where the key is masked).
template <typename T, int QT, int VEC>
__global__ void __launch_bounds__(kThreads, 2)
    additive_attention_bwd_scores_kernel(const AdditiveAttentionBackwardParams params) {
    float* smem = dynamic_shared<float>();
    const int64_t keys = params.keys, queries = params.queries, value_size = params.value_size;
    const int64_t value_pad = round_up(value_size, 4);
    const int64_t query_tiles = ceil_div(queries, QT);
    const int64_t b = blockIdx.x / query_tiles;
    const int64_t q0 = (blockIdx.x % query_tiles) * QT;
    const int tile_queries = int(queries - q0 < QT ? queries - q0 : QT);
    const int warp = threadIdx.x / kWarpSize;
    const int lane = threadIdx.x % kWarpSize;
    float* grad_context_s = smem;  // [QT, value_pad]

    // The second half's scratch that must start at zero: the atomic sums of grad_query over tiles of keys (this
    // tile's rows) and the arrival counters (the row's, and with row 0 the slices' of grad_v).
    const int64_t attn = params.attn;
    if (params.grad_query_sums != nullptr && params.grad_query_tile_stride == 0) {
        float* sums = params.grad_query_sums + (b * queries + q0) * attn;
        for (int64_t index = threadIdx.x; index < tile_queries * attn; index += kThreads) sums[index] = 0.0f;
    }
    if (q0 == 0) {
        const int64_t slices = ceil_div(attn, kBackwardThreads);
        for (int64_t slice = threadIdx.x; slice < slices; slice += kThreads) {
            params.arrivals[b * slices + slice] = 0;
            if (b == 0) params.arrivals[params.batch * slices + slice] = 0;
        }
    }

    const T* __restrict__ grad_context = static_cast<const T*>(params.grad_context) + (b * queries + q0) * value_size;
    for (int64_t index = threadIdx.x; index < QT * value_pad; index += kThreads) {
        const int64_t qi = index / value_pad, d = index % value_pad;
        grad_context_s[index] =
            (qi < tile_queries && d < value_size) ? to_float(grad_context[qi * value_size + d]) : 0.0f;
    }
    __syncthreads();

    const bool* mask_row = params.mask == nullptr ? nullptr : params.mask + b * keys;
    const T* __restrict__ grad_weights = static_cast<const T*>(params.grad_weights) + (b * queries + q0) * keys;
    float* grad_scores = params.grad_scores + (b * queries + q0) * keys;
    {
        const int lanes_per_key = lanes_for(ceil_div(value_size, VEC));
        const int keys_per_warp = kWarpSize / lanes_per_key;
        const int key_lane = lane / lanes_per_key, sub = lane % lanes_per_key;
        const T* __restrict__ values = static_cast<const T*>(params.values) + b * keys * value_size;
        for (int64_t k_first = int64_t(warp) * keys_per_warp; k_first < keys; k_first += kWarps * keys_per_warp) {
            const int64_t k = k_first + key_lane;
            const bool valid = k < keys && key_is_valid(mask_row, k);
            float acc[QT];
#pragma unroll
            for (int qi = 0; qi < QT; ++qi) acc[qi] = 0.0f;
            if (valid) {
                const T* p_value = values + k * value_size;
                for (int64_t d = int64_t(sub) * VEC; d < value_size; d += int64_t(lanes_per_key) * VEC) {
                    float b_value[VEC];
                    load_floats<T, VEC>(p_value + d, b_value);
#pragma unroll
                    for (int qi = 0; qi < QT; ++qi) {
                        if (qi < tile_queries) {
                            float b_grad[VEC];
                            load_shared_floats<VEC>(grad_context_s + qi * value_pad + d, b_grad);
#pragma unroll
                            for (int i = 0; i < VEC; ++i) acc[qi] = fmaf(b_grad[i], b_value[i], acc[qi]);
                        }
                    }
                }
            }
#pragma unroll
            for (int qi = 0; qi < QT; ++qi)
                if (qi < tile_queries) acc[qi] = group_sum(acc[qi], lanes_per_key);
            if (sub == 0 && k < keys) {
#pragma unroll
                for (int qi = 0; qi < QT; ++qi)
                    if (qi < tile_queries)
                        grad_scores[qi * keys + k] = valid ? acc[qi] + to_float(grad_weights[qi * keys + k]) : 0.0f;
            }
        }
    }
    __syncthreads();

    const float* probs = params.probs + (b * queries + q0) * keys;
    const bool vector_scores = keys % 4 == 0 && is_aligned(probs, 16) && is_aligned(grad_scores, 16);
    for (int qi = warp; qi < tile_queries; qi += kWarps) {
        if (vector_scores)
            softmax_backward_row<4>(grad_scores + qi * keys, probs + qi * keys, keys, lane);
        else
            softmax_backward_row<1>(grad_scores + qi * keys, probs + qi * keys, keys, lane);
    }
}

// Rows [q0, q0 + kBackwardQueryChunk) and keys [k0, k0 + KT) of a [queries, keys] fp32 matrix (`rows` points at
// row q0, key k0) into shared memory [kBackwardQueryChunk, KT], zeros outside. VEC = 4: 16-byte loads, four scores
// at once (keys % 4 == 0 and a 16-byte aligned matrix, so every row start and k0 are aligned and a tile holds whole
// groups of four).
template <int VEC>
__device__ __forceinline__ void stage_score_tile(float* tile_s, const float* rows, int64_t keys, int64_t rows_left,
                                                 int tile_keys) {
    constexpr int KT = kAttentionBackwardKeyTile;
    for (int index = threadIdx.x * VEC; index < kBackwardQueryChunk * KT; index += kBackwardThreads * VEC) {
        const int qi = index / KT, kj = index % KT;
        float b_score[VEC];
        if (qi < rows_left && kj < tile_keys) {
            load_floats<float, VEC>(rows + qi * keys + kj, b_score);
        } else {
#pragma unroll
            for (int i = 0; i < VEC; ++i) b_score[i] = 0.0f;
        }
        store_floats<float, VEC>(tile_s + index, b_score);
    }
}

// Valid keys of the tile [k0, k0 + tile_keys) of row b, the same for every thread of a block.
__device__ __forceinline__ int tile_valid_keys(const bool* mask, int64_t b, int64_t keys, int64_t k0, int tile_keys) {
    if (mask == nullptr) return tile_keys;
    int valid_keys = 0;
    for (int kj = 0; kj < tile_keys; ++kj) valid_keys += mask[b * keys + k0 + kj] ? 1 : 0;
    return valid_keys;
}

// Whether this block is the last of `blocks` to arrive at *counter; every write the block made before is then
// visible to the caller, and every earlier block's writes are visible to this block (read them through L2).
__device__ __forceinline__ bool arrives_last(unsigned* counter, unsigned blocks, int* flag_s) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) *flag_s = atomicAdd(counter, 1u) == blocks - 1 ? 1 : 0;
    __syncthreads();
    const bool last = *flag_s != 0;
    if (last) __threadfence();
    __syncthreads();
    return last;
}

// The input gradients of one block (slice of kBackwardThreads columns of A, tile of keys, batch row); one thread per
// column a keeps key_proj[k, a] and its gradient for the tile's keys in registers and walks all queries:
//   g = grad_scores * (1 - tanh^2),  grad_key[k, a] = v[a] sum_q g,  grad_query[q, a] += v[a] sum_k g,
//   grad_v[a] += sum_{q, k} grad_scores * tanh.
// The mask is tested per tile of keys (skip a tile without a valid key, no test per element in one without a masked
// key); grad_scores is the same for every thread of the block, so skipping its zeros in a mixed tile never diverges.
// grad_query: with one tile of keys written here; else each tile adds its sums into grad_query_sums (atomically, or
// into a slab of its own when the caller asks for a deterministic result) and the row's last tile to arrive writes
// the total. grad_v: each block writes its sums to grad_v_partial and the slice's last block adds them in order.
template <typename T, int VEC, bool PACKED>
__device__ __forceinline__ void attention_input_gradients(const AdditiveAttentionBackwardParams& params,
                                                          float* grad_scores_s, int* flag_s) {
    constexpr int KT = kAttentionBackwardKeyTile;
    const int64_t attn = params.attn, keys = params.keys, queries = params.queries;
    const unsigned slices = unsigned(ceil_div(attn, kBackwardThreads));
    const int64_t a = int64_t(blockIdx.x) * kBackwardThreads + threadIdx.x;
    const int64_t k0 = int64_t(blockIdx.y) * KT;
    const int64_t b = blockIdx.z;
    const int tile_keys = int(keys - k0 < KT ? keys - k0 : KT);
    const bool column = a < attn;

    const T* __restrict__ key_proj = static_cast<const T*>(params.key_proj) + (b * keys + k0) * attn;
    float b_key[KT], b_grad_key[KT];
#pragma unroll
    for (int kj = 0; kj < KT; ++kj) {
        b_key[kj] = (column && kj < tile_keys) ? to_float(key_proj[kj * attn + a]) : 0.0f;
        b_grad_key[kj] = 0.0f;
    }
    const float v_a = column ? to_float(static_cast<const T*>(params.v)[a]) : 0.0f;
    float grad_v = 0.0f;

    const T* __restrict__ query_proj = static_cast<const T*>(params.query_proj) + b * queries * attn;
    const float* grad_scores = params.grad_scores + b * queries * keys + k0;
    // Pointers and modes come from the kernel's parameters (constant memory) where they are used, which keeps them
    // out of the registers the query loop needs.
    const auto add_grad_query = [&](int64_t q, float value) {
        if (!column) return;
        const int64_t index = (b * queries + q) * attn + a;
        if (gridDim.y == 1)
            static_cast<T*>(params.grad_query)[index] = from_float<T>(value);
        else if (params.grad_query_tile_stride != 0)
            params.grad_query_sums[int64_t(blockIdx.y) * params.grad_query_tile_stride + index] = value;
        else
            atomicAdd(params.grad_query_sums + index, value);
    };
    const int valid_keys = tile_valid_keys(params.mask, b, keys, k0, tile_keys);
    const auto walk_queries = [&](auto skip_zero_scores) {
        for (int64_t q0 = 0; q0 < queries; q0 += kBackwardQueryChunk) {
            __syncthreads();
            stage_score_tile<VEC>(grad_scores_s, grad_scores + q0 * keys, keys, queries - q0, tile_keys);
            __syncthreads();
            const int chunk_queries = int(queries - q0 < kBackwardQueryChunk ? queries - q0 : kBackwardQueryChunk);
            for (int qi = 0; qi < chunk_queries; ++qi) {
                const float q_a = column ? to_float(query_proj[(q0 + qi) * attn + a]) : 0.0f;
                float grad_q = 0.0f;
#pragma unroll
                for (int k4 = 0; k4 < KT; k4 += 4) {
                    float b_grad_score[4];
                    load_shared_floats<4>(grad_scores_s + qi * KT + k4, b_grad_score);
                    const auto add_key = [&](int kj, float grad_score, float t) {
                        const float grad_t = grad_score * t;
                        grad_v += grad_t;
                        const float g = fmaf(-grad_t, t, grad_score);
                        grad_q += g;
                        b_grad_key[kj] += g;
                    };
                    if constexpr (PACKED) {
#pragma unroll
                        for (int i = 0; i < 4; i += 2) {
                            if (decltype(skip_zero_scores)::value && b_grad_score[i] == 0.0f &&
                                b_grad_score[i + 1] == 0.0f)
                                continue;
                            float t0 = q_a + b_key[k4 + i], t1 = q_a + b_key[k4 + i + 1];
                            tanh_approx_packed<T>(t0, t1);
                            add_key(k4 + i, b_grad_score[i], t0);
                            add_key(k4 + i + 1, b_grad_score[i + 1], t1);
                        }
                    } else {
#pragma unroll
                        for (int i = 0; i < 4; ++i) {
                            if (decltype(skip_zero_scores)::value && b_grad_score[i] == 0.0f) continue;
                            add_key(k4 + i, b_grad_score[i], tanh_for<T>(q_a + b_key[k4 + i]));
                        }
                    }
                }
                add_grad_query(q0 + qi, v_a * grad_q);
            }
        }
    };
    if (valid_keys == tile_keys) {
        walk_queries(std::false_type{});
    } else if (valid_keys > 0) {
        walk_queries(std::true_type{});
    } else if (gridDim.y == 1 || params.grad_query_tile_stride != 0) {
        for (int64_t q = 0; q < queries; ++q) add_grad_query(q, 0.0f);
    }

    if (column) {
        T* grad_key = static_cast<T*>(params.grad_key) + (b * keys + k0) * attn;
#pragma unroll
        for (int kj = 0; kj < KT; ++kj)
            if (kj < tile_keys) grad_key[kj * attn + a] = from_float<T>(v_a * b_grad_key[kj]);
    }
    if (gridDim.y > 1 && arrives_last(params.arrivals + b * slices + blockIdx.x, gridDim.y, flag_s) && column) {
        T* grad_query = static_cast<T*>(params.grad_query);
        for (int64_t q = 0; q < queries; ++q) {
            const int64_t index = (b * queries + q) * attn + a;
            float total = 0.0f;
            if (params.grad_query_tile_stride != 0) {
                for (unsigned tile = 0; tile < gridDim.y; ++tile)
                    total += __ldcg(params.grad_query_sums + int64_t(tile) * params.grad_query_tile_stride + index);
            } else {
                total = __ldcg(params.grad_query_sums + index);
            }
            grad_query[index] = from_float<T>(total);
        }
    }
    T* grad_v_out = static_cast<T*>(params.grad_v);
    const unsigned v_blocks = gridDim.y * gridDim.z;
    if (v_blocks == 1) {
        if (column) grad_v_out[a] = from_float<T>(grad_v);
        return;
    }
    if (column) params.grad_v_partial[(b * gridDim.y + blockIdx.y) * attn + a] = grad_v;
    if (arrives_last(params.arrivals + gridDim.z * slices + blockIdx.x, v_blocks, flag_s) && column) {
        float total = 0.0f;
        for (unsigned row = 0; row < v_blocks; ++row) total += __ldcg(params.grad_v_partial + row * attn + a);
        grad_v_out[a] = from_float<T>(total);
    }
}

// grad_values of one block (slice of kBackwardThreads columns of Dv, tile of keys, batch row): one thread per
// column d keeps the tile's sums in registers, grad_values[k, d] = sum_q probs[q, k] grad_context[q, d], in fp32.
template <typename T, int VEC>
__device__ __forceinline__ void attention_value_gradients(const AdditiveAttentionBackwardParams& params,
                                                          unsigned slice, float* probs_s) {
    constexpr int KT = kAttentionBackwardKeyTile;
    const int64_t keys = params.keys, queries = params.queries, value_size = params.value_size;
    const int64_t d = int64_t(slice) * kBackwardThreads + threadIdx.x;
    const int64_t k0 = int64_t(blockIdx.y) * KT;
    const int64_t b = blockIdx.z;
    const int tile_keys = int(keys - k0 < KT ? keys - k0 : KT);
    const bool column = d < value_size;
    float acc[KT];
#pragma unroll
    for (int kj = 0; kj < KT; ++kj) acc[kj] = 0.0f;
    // Masked keys have probability 0: a tile without a valid key has zero gradients.
    if (tile_valid_keys(params.mask, b, keys, k0, tile_keys) > 0) {
        const T* __restrict__ grad_context = static_cast<const T*>(params.grad_context) + b * queries * value_size;
        const float* probs = params.probs + b * queries * keys + k0;
        for (int64_t q0 = 0; q0 < queries; q0 += kBackwardQueryChunk) {
            __syncthreads();
            stage_score_tile<VEC>(probs_s, probs + q0 * keys, keys, queries - q0, tile_keys);
            __syncthreads();
            const int chunk_queries = int(queries - q0 < kBackwardQueryChunk ? queries - q0 : kBackwardQueryChunk);
            for (int qi = 0; qi < chunk_queries; ++qi) {
                const float grad = column ? to_float(grad_context[(q0 + qi) * value_size + d]) : 0.0f;
#pragma unroll
                for (int k4 = 0; k4 < KT; k4 += 4) {
                    float b_prob[4];
                    load_shared_floats<4>(probs_s + qi * KT + k4, b_prob);
#pragma unroll
                    for (int i = 0; i < 4; ++i) acc[k4 + i] = fmaf(b_prob[i], grad, acc[k4 + i]);
                }
            }
        }
    }
    if (!column) return;
    T* grad_values = static_cast<T*>(params.grad_values) + (b * keys + k0) * value_size;
#pragma unroll
    for (int kj = 0; kj < KT; ++kj)
        if (kj < tile_keys) grad_values[kj * value_size + d] = from_float<T>(acc[kj]);
}

// The second half of the backward (PACKED: two tanh per packed instruction, half and bfloat16): blocks with blockIdx.x
// below ceil(A / kBackwardThreads) form the input
// gradients, the others grad_values (a choice per block, so no warp diverges over it).
template <typename T, int VEC, bool PACKED>
__global__ void __launch_bounds__(kBackwardThreads)
    additive_attention_bwd_inputs_kernel(const AdditiveAttentionBackwardParams params) {
    float* tile_s = dynamic_shared<float>();  // [kBackwardQueryChunk, KT], then one int
    int* flag_s = reinterpret_cast<int*>(tile_s + kBackwardQueryChunk * kAttentionBackwardKeyTile);
    const unsigned attn_slices = unsigned(ceil_div(params.attn, kBackwardThreads));
    if (blockIdx.x < attn_slices)
        attention_input_gradients<T, VEC, PACKED>(params, tile_s, flag_s);
    else
        attention_value_gradients<T, VEC>(params, blockIdx.x - attn_slices, tile_s);
}

// Queries per block: the largest tile that still gives every multiprocessor a block and fits shared memory.
template <int QT>
bool tile_fits(int64_t shared_floats, const DeviceLimits& limits) {
    return shared_floats * int64_t(sizeof(float)) <= limits.max_shared_per_block;
}

int choose_query_tile(int64_t batch, int64_t queries, const DeviceLimits& limits, int64_t shared16, int64_t shared4,
                      int64_t shared1) {
    const int64_t sms = limits.multiprocessors;
    if (queries > 4 && batch * ceil_div(queries, 16) >= sms && tile_fits<16>(shared16, limits)) return 16;
    if (queries > 1 && batch * ceil_div(queries, 4) >= sms / 2 && tile_fits<4>(shared4, limits)) return 4;
    return tile_fits<1>(shared1, limits) ? 1 : 0;
}

template <typename Params>
cudaError_t launch_with_shared(void (*kernel)(Params), int64_t blocks, int64_t shared_bytes, cudaStream_t stream,
                               const Params& params) {
    if (shared_bytes > 48 * 1024) {
        const cudaError_t status =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes));
        if (status != cudaSuccess) return status;
    }
    return launch_kernel(kernel, dim3(unsigned(blocks)), dim3(kThreads), size_t(shared_bytes), stream, params);
}

template <typename T, int QT>
cudaError_t launch_forward(const AdditiveAttentionForwardParams& params, bool vectorized, cudaStream_t stream) {
    constexpr int V = kVec16<T>;
    const int vec = vectorized ? V : 1;
    const int64_t shared_bytes = forward_shared_floats<QT>(params.attn, params.value_size, vec) * sizeof(float);
    const int64_t blocks = params.batch * ceil_div(params.queries, QT);
    if constexpr (sizeof(T) == 2) {
        if (vectorized && params.packed_tanh)
            return launch_with_shared(additive_attention_fwd_kernel<T, QT, V, true>, blocks, shared_bytes, stream,
                                      params);
    }
    if (vectorized)
        return launch_with_shared(additive_attention_fwd_kernel<T, QT, V, false>, blocks, shared_bytes, stream, params);
    return launch_with_shared(additive_attention_fwd_kernel<T, QT, 1, false>, blocks, shared_bytes, stream, params);
}

template <typename T, int QT>
cudaError_t launch_bwd_scores(const AdditiveAttentionBackwardParams& params, bool vectorized, cudaStream_t stream) {
    constexpr int V = kVec16<T>;
    const int64_t shared_bytes = scores_backward_shared_floats<QT>(params.value_size) * sizeof(float);
    const int64_t blocks = params.batch * ceil_div(params.queries, QT);
    if (vectorized)
        return launch_with_shared(additive_attention_bwd_scores_kernel<T, QT, V>, blocks, shared_bytes, stream, params);
    return launch_with_shared(additive_attention_bwd_scores_kernel<T, QT, 1>, blocks, shared_bytes, stream, params);
}

}  // namespace

template <typename T>
cudaError_t additive_attention_fwd(const AdditiveAttentionForwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.queries == 0) return cudaSuccess;
    if (params.attn > kAttentionMaxWidth || params.value_size > kAttentionMaxWidth) return cudaErrorInvalidValue;
    DeviceLimits limits;
    const cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.attn % V == 0 && params.value_size % V == 0 && is_aligned(params.key_proj, 16) &&
                            is_aligned(params.values, 16);
    const int vec = vectorized ? V : 1;
    const int tile = choose_query_tile(params.batch, params.queries, limits,
                                       forward_shared_floats<16>(params.attn, params.value_size, vec),
                                       forward_shared_floats<4>(params.attn, params.value_size, vec),
                                       forward_shared_floats<1>(params.attn, params.value_size, vec));
    switch (tile) {
        case 16: return launch_forward<T, 16>(params, vectorized, stream);
        case 4: return launch_forward<T, 4>(params, vectorized, stream);
        case 1: return launch_forward<T, 1>(params, vectorized, stream);
        default: return cudaErrorInvalidValue;
    }
}

template <typename T>
cudaError_t additive_attention_bwd_scores(const AdditiveAttentionBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.queries == 0 || params.keys == 0) return cudaSuccess;
    if (params.attn > kAttentionMaxWidth || params.value_size > kAttentionMaxWidth) return cudaErrorInvalidValue;
    DeviceLimits limits;
    const cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.value_size % V == 0 && is_aligned(params.values, 16);
    const int tile = choose_query_tile(
        params.batch, params.queries, limits, scores_backward_shared_floats<16>(params.value_size),
        scores_backward_shared_floats<4>(params.value_size), scores_backward_shared_floats<1>(params.value_size));
    switch (tile) {
        case 16: return launch_bwd_scores<T, 16>(params, vectorized, stream);
        case 4: return launch_bwd_scores<T, 4>(params, vectorized, stream);
        case 1: return launch_bwd_scores<T, 1>(params, vectorized, stream);
        default: return cudaErrorInvalidValue;
    }
}

template <typename T>
cudaError_t additive_attention_bwd_inputs(const AdditiveAttentionBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.queries == 0 || params.keys == 0) return cudaSuccess;
    if (params.batch > kAttentionMaxBatch) return cudaErrorInvalidValue;
    const int64_t slices = ceil_div(params.attn, kBackwardThreads) + ceil_div(params.value_size, kBackwardThreads);
    if (slices == 0) return cudaSuccess;
    const dim3 grid(unsigned(slices), unsigned(ceil_div(params.keys, kAttentionBackwardKeyTile)),
                    unsigned(params.batch));
    const size_t shared_bytes = sizeof(float) * kBackwardQueryChunk * kAttentionBackwardKeyTile + 16;
    const bool vectorized = params.keys % 4 == 0 && is_aligned(params.grad_scores, 16) && is_aligned(params.probs, 16);
    return S2S_FAST_VECTOR_SWITCH(vectorized, float, VEC, [&] {
        if constexpr (sizeof(T) == 2) {
            if (params.packed_tanh)
                return launch_kernel(additive_attention_bwd_inputs_kernel<T, VEC, true>, grid, dim3(kBackwardThreads),
                                     shared_bytes, stream, params);
        }
        return launch_kernel(additive_attention_bwd_inputs_kernel<T, VEC, false>, grid, dim3(kBackwardThreads),
                             shared_bytes, stream, params);
    });
}

namespace {

struct BackwardWorkspace {
    int64_t grad_scores, grad_query_sums, grad_v_partial, arrivals;  // sizes in floats, each a multiple of 4
};

BackwardWorkspace backward_workspace(int64_t batch, int64_t queries, int64_t keys, int64_t attn, bool deterministic) {
    const int64_t key_tiles = ceil_div(keys, kAttentionBackwardKeyTile);
    const int64_t query_sums = key_tiles == 1 ? 0 : (deterministic ? key_tiles : 1) * batch * queries * attn;
    const int64_t slices = ceil_div(attn, kBackwardThreads);
    return {round_up(batch * queries * keys, 4), round_up(query_sums, 4), round_up(batch * key_tiles * attn, 4),
            round_up((batch + 1) * slices, 4)};
}

}  // namespace

int64_t additive_attention_bwd_workspace(int64_t batch, int64_t queries, int64_t keys, int64_t attn,
                                         bool deterministic) {
    const BackwardWorkspace parts = backward_workspace(batch, queries, keys, attn, deterministic);
    return parts.grad_scores + parts.grad_query_sums + parts.grad_v_partial + parts.arrivals;
}

void additive_attention_bwd_layout(AdditiveAttentionBackwardParams& params, float* workspace, bool deterministic) {
    const BackwardWorkspace parts =
        backward_workspace(params.batch, params.queries, params.keys, params.attn, deterministic);
    params.grad_scores = workspace;
    params.grad_query_sums = parts.grad_query_sums == 0 ? nullptr : workspace + parts.grad_scores;
    params.grad_query_tile_stride =
        parts.grad_query_sums != 0 && deterministic ? params.batch * params.queries * params.attn : 0;
    params.grad_v_partial = workspace + parts.grad_scores + parts.grad_query_sums;
    static_assert(sizeof(unsigned) == sizeof(float), "arrival counters share the fp32 workspace");
    params.arrivals = reinterpret_cast<unsigned*>(params.grad_v_partial + parts.grad_v_partial);
}

#define S2S_FAST_INSTANTIATE_ATTENTION(T)                                                                        \
    template cudaError_t additive_attention_fwd<T>(const AdditiveAttentionForwardParams&, cudaStream_t);         \
    template cudaError_t additive_attention_bwd_scores<T>(const AdditiveAttentionBackwardParams&, cudaStream_t); \
    template cudaError_t additive_attention_bwd_inputs<T>(const AdditiveAttentionBackwardParams&, cudaStream_t);

S2S_FAST_INSTANTIATE_ATTENTION(float)
S2S_FAST_INSTANTIATE_ATTENTION(__half)
S2S_FAST_INSTANTIATE_ATTENTION(__nv_bfloat16)

}  // namespace s2s_fast
