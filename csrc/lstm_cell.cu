// LSTM cell step kernels: pointwise gate math after a cuBLAS GEMM, a fused small-batch step that computes the
// gates itself, and the backward gate math. See lstm_cell.h for the two forward paths.
#include <algorithm>

#include "lstm_cell.h"
#include "lstm_math.h"

namespace s2s_fast {
namespace {

constexpr int kPointwiseThreads = 256;
constexpr int kFusedWarps = 4;
constexpr int64_t kMaxGridBlocks = int64_t(1) << 20;

template <typename T, int VEC>
__global__ void __launch_bounds__(kPointwiseThreads)
    lstm_cell_pointwise_fwd_kernel(const LstmCellPointwiseParams params) {
    const int64_t hidden = params.hidden;
    const int64_t vectors_per_row = hidden / VEC;
    const int64_t total = params.batch * vectors_per_row;
    const T* __restrict__ gates_base = static_cast<const T*>(params.gates);
    const T* __restrict__ bias_ih = static_cast<const T*>(params.bias_ih);
    const T* __restrict__ bias_hh = static_cast<const T*>(params.bias_hh);
    const T* __restrict__ cx_base = static_cast<const T*>(params.cx);
    T* __restrict__ hy_base = static_cast<T*>(params.hy);
    T* __restrict__ cy_base = static_cast<T*>(params.cy);
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
         index += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = index / vectors_per_row;
        const int64_t unit = (index - row * vectors_per_row) * VEC;
        const T* gates = gates_base + row * params.gates_row_stride + unit;
        float pre[4][VEC];  // [gate, unit]
#pragma unroll
        for (int gate = 0; gate < 4; ++gate) load_floats<T, VEC>(gates + gate * hidden, pre[gate]);
        // One bias may be absent; the branch is uniform over the launch.
        for (const T* bias : {bias_ih, bias_hh}) {
            if (bias == nullptr) continue;
#pragma unroll
            for (int gate = 0; gate < 4; ++gate) {
                float b_bias[VEC];
                load_floats<T, VEC>(bias + gate * hidden + unit, b_bias);
#pragma unroll
                for (int i = 0; i < VEC; ++i) pre[gate][i] += b_bias[i];
            }
        }
        float b_cx[VEC];
        load_floats<T, VEC>(cx_base + row * params.cx_row_stride + unit, b_cx);
        float b_hy[VEC], b_cy[VEC], b_act[4][VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const LstmActivations act = lstm_activate(pre[0][i], pre[1][i], pre[2][i], pre[3][i]);
            b_cy[i] = lstm_next_cell(act, b_cx[i]);
            b_hy[i] = act.out_gate * tanhf(b_cy[i]);
            b_act[0][i] = act.in_gate;
            b_act[1][i] = act.forget_gate;
            b_act[2][i] = act.cell_gate;
            b_act[3][i] = act.out_gate;
        }
        store_floats<T, VEC>(hy_base + row * hidden + unit, b_hy);
        store_floats<T, VEC>(cy_base + row * hidden + unit, b_cy);
        if (params.activations != nullptr) {
#pragma unroll
            for (int gate = 0; gate < 4; ++gate)
                store_floats<float, VEC>(params.activations + row * 4 * hidden + gate * hidden + unit, b_act[gate]);
        }
    }
}

// acc[gate * 8 + row] += weight[gate * hidden + unit, :] . vectors[row, :] over one operand (input or hidden).
template <typename T, int VEC>
__device__ __forceinline__ void accumulate_gate_rows(const T* __restrict__ weight, int64_t weight_row_stride,
                                                     const T* __restrict__ vectors, int64_t vector_row_stride,
                                                     int64_t length, int64_t unit, int64_t hidden, int batch, int lane,
                                                     float (&acc)[4 * kLstmCellFusedMaxBatch]) {
    const T* p_rows[4];
#pragma unroll
    for (int gate = 0; gate < 4; ++gate) p_rows[gate] = weight + (gate * hidden + unit) * weight_row_stride;
    for (int64_t k = int64_t(lane) * VEC; k < length; k += kWarpSize * VEC) {
        float b_weight[4][VEC];  // [gate, k]
#pragma unroll
        for (int gate = 0; gate < 4; ++gate) load_floats<T, VEC>(p_rows[gate] + k, b_weight[gate]);
#pragma unroll
        for (int row = 0; row < kLstmCellFusedMaxBatch; ++row) {
            if (row < batch) {
                float b_vector[VEC];
                load_floats<T, VEC>(vectors + row * vector_row_stride + k, b_vector);
#pragma unroll
                for (int gate = 0; gate < 4; ++gate) {
#pragma unroll
                    for (int i = 0; i < VEC; ++i)
                        acc[gate * kLstmCellFusedMaxBatch + row] =
                            fmaf(b_weight[gate][i], b_vector[i], acc[gate * kLstmCellFusedMaxBatch + row]);
                }
            }
        }
    }
}

// One warp per hidden unit: lanes split the reduction dimension, 4 gates x 8 rows of partial sums per lane are
// reduced with one transpose-sum, then lanes 0..B-1 apply the gate math for their row.
template <typename T, int VEC>
__global__ void __launch_bounds__(kFusedWarps* kWarpSize) lstm_cell_fused_fwd_kernel(const LstmCellFusedParams params) {
    static_assert(4 * kLstmCellFusedMaxBatch == kWarpSize, "the transpose-sum maps one (gate, row) per lane");
    const int lane = threadIdx.x % kWarpSize;
    const int64_t hidden = params.hidden;
    const int64_t unit = int64_t(blockIdx.x) * kFusedWarps + threadIdx.x / kWarpSize;
    // A warp past the last unit leaves; the kernel has no block-wide barrier.
    if (unit >= hidden) return;
    const int batch = int(params.batch);
    float acc[4 * kLstmCellFusedMaxBatch];
#pragma unroll
    for (int i = 0; i < 4 * kLstmCellFusedMaxBatch; ++i) acc[i] = 0.0f;
    accumulate_gate_rows<T, VEC>(static_cast<const T*>(params.weight_ih), params.weight_ih_row_stride,
                                 static_cast<const T*>(params.input), params.input_row_stride, params.input_size, unit,
                                 hidden, batch, lane, acc);
    accumulate_gate_rows<T, VEC>(static_cast<const T*>(params.weight_hh), params.weight_hh_row_stride,
                                 static_cast<const T*>(params.hx), params.hx_row_stride, hidden, unit, hidden, batch,
                                 lane, acc);
    float pre_gate = warp_transpose_sum(acc);  // lane = gate * 8 + row
    const int gate = lane / kLstmCellFusedMaxBatch;
    const int row = lane % kLstmCellFusedMaxBatch;
    const int64_t gate_row = gate * hidden + unit;
    if (params.bias_ih != nullptr) pre_gate += to_float(static_cast<const T*>(params.bias_ih)[gate_row]);
    if (params.bias_hh != nullptr) pre_gate += to_float(static_cast<const T*>(params.bias_hh)[gate_row]);
    const float pre_in = __shfl_sync(kFullWarpMask, pre_gate, row);
    const float pre_forget = __shfl_sync(kFullWarpMask, pre_gate, kLstmCellFusedMaxBatch + row);
    const float pre_cell = __shfl_sync(kFullWarpMask, pre_gate, 2 * kLstmCellFusedMaxBatch + row);
    const float pre_out = __shfl_sync(kFullWarpMask, pre_gate, 3 * kLstmCellFusedMaxBatch + row);
    if (lane >= batch) return;
    const LstmActivations act = lstm_activate(pre_in, pre_forget, pre_cell, pre_out);
    const float cx = to_float(static_cast<const T*>(params.cx)[row * params.cx_row_stride + unit]);
    const float cy = lstm_next_cell(act, cx);
    static_cast<T*>(params.cy)[row * hidden + unit] = from_float<T>(cy);
    static_cast<T*>(params.hy)[row * hidden + unit] = from_float<T>(act.out_gate * tanhf(cy));
    if (params.activations != nullptr) {
        float* p_act = params.activations + row * 4 * hidden + unit;
        p_act[0] = act.in_gate;
        p_act[hidden] = act.forget_gate;
        p_act[2 * hidden] = act.cell_gate;
        p_act[3 * hidden] = act.out_gate;
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kPointwiseThreads) lstm_cell_bwd_kernel(const LstmCellBackwardParams params) {
    const int64_t hidden = params.hidden;
    const int64_t vectors_per_row = hidden / VEC;
    const int64_t total = params.batch * vectors_per_row;
    const T* __restrict__ grad_hy_base = static_cast<const T*>(params.grad_hy);
    const T* __restrict__ grad_cy_base = static_cast<const T*>(params.grad_cy);
    const T* __restrict__ cx_base = static_cast<const T*>(params.cx);
    T* __restrict__ grad_gates_base = static_cast<T*>(params.grad_gates);
    T* __restrict__ grad_cx_base = static_cast<T*>(params.grad_cx);
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
         index += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = index / vectors_per_row;
        const int64_t unit = (index - row * vectors_per_row) * VEC;
        float b_grad_hy[VEC], b_grad_cy[VEC], b_cx[VEC], b_act[4][VEC];
        load_floats<T, VEC>(grad_hy_base + row * params.grad_hy_row_stride + unit, b_grad_hy);
        load_floats<T, VEC>(grad_cy_base + row * params.grad_cy_row_stride + unit, b_grad_cy);
        load_floats<T, VEC>(cx_base + row * params.cx_row_stride + unit, b_cx);
#pragma unroll
        for (int gate = 0; gate < 4; ++gate)
            load_floats<float, VEC>(params.activations + row * 4 * hidden + gate * hidden + unit, b_act[gate]);
        float b_grad_gates[4][VEC], b_grad_cx[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const LstmActivations act{b_act[0][i], b_act[1][i], b_act[2][i], b_act[3][i]};
            const LstmGateGrads grads = lstm_backward(act, b_cx[i], b_grad_hy[i], b_grad_cy[i]);
            b_grad_gates[0][i] = grads.in_gate;
            b_grad_gates[1][i] = grads.forget_gate;
            b_grad_gates[2][i] = grads.cell_gate;
            b_grad_gates[3][i] = grads.out_gate;
            b_grad_cx[i] = grads.cx;
        }
#pragma unroll
        for (int gate = 0; gate < 4; ++gate)
            store_floats<T, VEC>(grad_gates_base + row * 4 * hidden + gate * hidden + unit, b_grad_gates[gate]);
        store_floats<T, VEC>(grad_cx_base + row * hidden + unit, b_grad_cx);
    }
}

unsigned pointwise_blocks(int64_t items) {
    return unsigned(std::min(ceil_div(items, kPointwiseThreads), kMaxGridBlocks));
}

}  // namespace

template <typename T>
cudaError_t lstm_cell_pointwise_fwd(const LstmCellPointwiseParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0) return cudaSuccess;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.hidden % V == 0 && params.gates_row_stride % V == 0 &&
                            params.cx_row_stride % V == 0 && is_aligned(params.gates, 16) &&
                            is_aligned(params.cx, 16) && is_aligned(params.hy, 16) && is_aligned(params.cy, 16) &&
                            (params.bias_ih == nullptr || is_aligned(params.bias_ih, 16)) &&
                            (params.bias_hh == nullptr || is_aligned(params.bias_hh, 16)) &&
                            (params.activations == nullptr || is_aligned(params.activations, 4 * V));
    return S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, [&] {
        return launch_kernel(lstm_cell_pointwise_fwd_kernel<T, VEC>,
                             dim3(pointwise_blocks(params.batch * params.hidden / VEC)), dim3(kPointwiseThreads), 0,
                             stream, params);
    });
}

template <typename T>
cudaError_t lstm_cell_fused_fwd(const LstmCellFusedParams& params, cudaStream_t stream) {
    if (params.batch < 0 || params.batch > kLstmCellFusedMaxBatch) return cudaErrorInvalidValue;
    if (params.batch == 0 || params.hidden == 0) return cudaSuccess;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.input_size % V == 0 && params.hidden % V == 0 && params.input_row_stride % V == 0 &&
                            params.hx_row_stride % V == 0 && params.weight_ih_row_stride % V == 0 &&
                            params.weight_hh_row_stride % V == 0 && is_aligned(params.input, 16) &&
                            is_aligned(params.hx, 16) && is_aligned(params.weight_ih, 16) &&
                            is_aligned(params.weight_hh, 16);
    const unsigned blocks = unsigned(ceil_div(params.hidden, kFusedWarps));
    return S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, [&] {
        return launch_kernel(lstm_cell_fused_fwd_kernel<T, VEC>, dim3(blocks), dim3(kFusedWarps * kWarpSize), 0, stream,
                             params);
    });
}

template <typename T>
cudaError_t lstm_cell_bwd(const LstmCellBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0) return cudaSuccess;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.hidden % V == 0 && params.grad_hy_row_stride % V == 0 &&
                            params.grad_cy_row_stride % V == 0 && params.cx_row_stride % V == 0 &&
                            is_aligned(params.grad_hy, 16) && is_aligned(params.grad_cy, 16) &&
                            is_aligned(params.cx, 16) && is_aligned(params.activations, 4 * V) &&
                            is_aligned(params.grad_gates, 16) && is_aligned(params.grad_cx, 16);
    return S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, [&] {
        return launch_kernel(lstm_cell_bwd_kernel<T, VEC>, dim3(pointwise_blocks(params.batch * params.hidden / VEC)),
                             dim3(kPointwiseThreads), 0, stream, params);
    });
}

#define S2S_FAST_INSTANTIATE_LSTM_CELL(T)                                                          \
    template cudaError_t lstm_cell_pointwise_fwd<T>(const LstmCellPointwiseParams&, cudaStream_t); \
    template cudaError_t lstm_cell_fused_fwd<T>(const LstmCellFusedParams&, cudaStream_t);         \
    template cudaError_t lstm_cell_bwd<T>(const LstmCellBackwardParams&, cudaStream_t);

S2S_FAST_INSTANTIATE_LSTM_CELL(float)
S2S_FAST_INSTANTIATE_LSTM_CELL(__half)
S2S_FAST_INSTANTIATE_LSTM_CELL(__nv_bfloat16)

}  // namespace s2s_fast
