// GRU cell step kernels: pointwise gate math after the two cuBLAS GEMMs, and its backward. See gru_cell.h.
#include <algorithm>

#include "common.h"
#include "gru_cell.h"

namespace s2s_fast {
namespace {

constexpr int kPointwiseThreads = 256;
constexpr int64_t kMaxGridBlocks = int64_t(1) << 20;

template <typename T, int VEC>
__device__ __forceinline__ void add_bias(const T* __restrict__ bias, int64_t hidden, int64_t unit,
                                         float (&pre)[3][VEC]) {
    if (bias == nullptr) return;
#pragma unroll
    for (int gate = 0; gate < 3; ++gate) {
        float b_bias[VEC];
        load_floats<T, VEC>(bias + gate * hidden + unit, b_bias);
#pragma unroll
        for (int i = 0; i < VEC; ++i) pre[gate][i] += b_bias[i];
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kPointwiseThreads) gru_cell_fwd_kernel(const GruCellForwardParams params) {
    const int64_t hidden = params.hidden;
    const int64_t vectors_per_row = hidden / VEC;
    const int64_t total = params.batch * vectors_per_row;
    const T* __restrict__ input_gates_base = static_cast<const T*>(params.input_gates);
    const T* __restrict__ hidden_gates_base = static_cast<const T*>(params.hidden_gates);
    const T* __restrict__ hx_base = static_cast<const T*>(params.hx);
    T* __restrict__ hy_base = static_cast<T*>(params.hy);
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
         index += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = index / vectors_per_row;
        const int64_t unit = (index - row * vectors_per_row) * VEC;
        float b_input[3][VEC], b_hidden[3][VEC];  // [gate, unit]
#pragma unroll
        for (int gate = 0; gate < 3; ++gate) {
            load_floats<T, VEC>(input_gates_base + row * params.input_gates_row_stride + gate * hidden + unit,
                                b_input[gate]);
            load_floats<T, VEC>(hidden_gates_base + row * params.hidden_gates_row_stride + gate * hidden + unit,
                                b_hidden[gate]);
        }
        add_bias<T, VEC>(static_cast<const T*>(params.bias_ih), hidden, unit, b_input);
        add_bias<T, VEC>(static_cast<const T*>(params.bias_hh), hidden, unit, b_hidden);
        float b_hx[VEC];
        load_floats<T, VEC>(hx_base + row * params.hx_row_stride + unit, b_hx);
        float b_hy[VEC], b_act[4][VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const float reset = sigmoid(b_input[0][i] + b_hidden[0][i]);
            const float update = sigmoid(b_input[1][i] + b_hidden[1][i]);
            const float candidate = tanhf(b_input[2][i] + reset * b_hidden[2][i]);
            b_hy[i] = candidate + update * (b_hx[i] - candidate);
            b_act[0][i] = reset;
            b_act[1][i] = update;
            b_act[2][i] = candidate;
            b_act[3][i] = b_hidden[2][i];
        }
        store_floats<T, VEC>(hy_base + row * hidden + unit, b_hy);
        if (params.activations != nullptr) {
#pragma unroll
            for (int gate = 0; gate < 4; ++gate)
                store_floats<float, VEC>(params.activations + row * 4 * hidden + gate * hidden + unit, b_act[gate]);
        }
    }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kPointwiseThreads) gru_cell_bwd_kernel(const GruCellBackwardParams params) {
    const int64_t hidden = params.hidden;
    const int64_t vectors_per_row = hidden / VEC;
    const int64_t total = params.batch * vectors_per_row;
    const T* __restrict__ grad_hy_base = static_cast<const T*>(params.grad_hy);
    const T* __restrict__ hx_base = static_cast<const T*>(params.hx);
    T* __restrict__ grad_input_base = static_cast<T*>(params.grad_input_gates);
    T* __restrict__ grad_hidden_base = static_cast<T*>(params.grad_hidden_gates);
    T* __restrict__ grad_hx_base = static_cast<T*>(params.grad_hx_direct);
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
         index += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = index / vectors_per_row;
        const int64_t unit = (index - row * vectors_per_row) * VEC;
        float b_grad_hy[VEC], b_hx[VEC], b_act[4][VEC];
        load_floats<T, VEC>(grad_hy_base + row * params.grad_hy_row_stride + unit, b_grad_hy);
        load_floats<T, VEC>(hx_base + row * params.hx_row_stride + unit, b_hx);
#pragma unroll
        for (int gate = 0; gate < 4; ++gate)
            load_floats<float, VEC>(params.activations + row * 4 * hidden + gate * hidden + unit, b_act[gate]);
        float b_grad_input[3][VEC], b_grad_hidden[3][VEC], b_grad_hx[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
            const float reset = b_act[0][i], update = b_act[1][i], candidate = b_act[2][i];
            const float hidden_candidate = b_act[3][i];
            const float grad_hy = b_grad_hy[i];
            const float grad_candidate_pre = grad_hy * (1.0f - update) * (1.0f - candidate * candidate);
            const float grad_update_pre = grad_hy * (b_hx[i] - candidate) * update * (1.0f - update);
            const float grad_reset_pre = grad_candidate_pre * hidden_candidate * reset * (1.0f - reset);
            b_grad_input[0][i] = grad_reset_pre;
            b_grad_input[1][i] = grad_update_pre;
            b_grad_input[2][i] = grad_candidate_pre;
            b_grad_hidden[0][i] = grad_reset_pre;
            b_grad_hidden[1][i] = grad_update_pre;
            b_grad_hidden[2][i] = grad_candidate_pre * reset;
            b_grad_hx[i] = grad_hy * update;
        }
#pragma unroll
        for (int gate = 0; gate < 3; ++gate) {
            store_floats<T, VEC>(grad_input_base + row * 3 * hidden + gate * hidden + unit, b_grad_input[gate]);
            store_floats<T, VEC>(grad_hidden_base + row * 3 * hidden + gate * hidden + unit, b_grad_hidden[gate]);
        }
        store_floats<T, VEC>(grad_hx_base + row * hidden + unit, b_grad_hx);
    }
}

unsigned pointwise_blocks(int64_t items) {
    return unsigned(std::min(ceil_div(items, kPointwiseThreads), kMaxGridBlocks));
}

}  // namespace

template <typename T>
cudaError_t gru_cell_fwd(const GruCellForwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0) return cudaSuccess;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.hidden % V == 0 && params.input_gates_row_stride % V == 0 &&
                            params.hidden_gates_row_stride % V == 0 && params.hx_row_stride % V == 0 &&
                            is_aligned(params.input_gates, 16) && is_aligned(params.hidden_gates, 16) &&
                            is_aligned(params.hx, 16) && is_aligned(params.hy, 16) &&
                            (params.bias_ih == nullptr || is_aligned(params.bias_ih, 16)) &&
                            (params.bias_hh == nullptr || is_aligned(params.bias_hh, 16)) &&
                            (params.activations == nullptr || is_aligned(params.activations, 4 * V));
    return S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, [&] {
        return launch_kernel(gru_cell_fwd_kernel<T, VEC>, dim3(pointwise_blocks(params.batch * params.hidden / VEC)),
                             dim3(kPointwiseThreads), 0, stream, params);
    });
}

template <typename T>
cudaError_t gru_cell_bwd(const GruCellBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0) return cudaSuccess;
    constexpr int V = kVec16<T>;
    const bool vectorized = params.hidden % V == 0 && params.grad_hy_row_stride % V == 0 &&
                            params.hx_row_stride % V == 0 && is_aligned(params.grad_hy, 16) &&
                            is_aligned(params.hx, 16) && is_aligned(params.activations, 4 * V) &&
                            is_aligned(params.grad_input_gates, 16) && is_aligned(params.grad_hidden_gates, 16) &&
                            is_aligned(params.grad_hx_direct, 16);
    return S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, [&] {
        return launch_kernel(gru_cell_bwd_kernel<T, VEC>, dim3(pointwise_blocks(params.batch * params.hidden / VEC)),
                             dim3(kPointwiseThreads), 0, stream, params);
    });
}

#define S2S_FAST_INSTANTIATE_GRU_CELL(T)                                             \
    template cudaError_t gru_cell_fwd<T>(const GruCellForwardParams&, cudaStream_t); \
    template cudaError_t gru_cell_bwd<T>(const GruCellBackwardParams&, cudaStream_t);

S2S_FAST_INSTANTIATE_GRU_CELL(float)
S2S_FAST_INSTANTIATE_GRU_CELL(__half)
S2S_FAST_INSTANTIATE_GRU_CELL(__nv_bfloat16)

}  // namespace s2s_fast
