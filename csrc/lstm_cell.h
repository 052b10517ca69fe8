// LSTM cell step (torch.nn.LSTMCell gate order i, f, g, o): parameters and host launchers.
//
// Two forward paths compute the same function:
//  - pointwise: the binding computes gates = input @ W_ih^T + hx @ W_hh^T with cuBLAS (tensor cores), then one
//    kernel adds the biases and applies the gate math;
//  - fused: one kernel computes the gates itself (fp32 FMA, weights read once with 16-byte loads) and applies the
//    gate math; for batches up to kLstmCellFusedMaxBatch, where the step is bound by launches and weight bytes.
// Both save the activated gates in fp32 for the one backward kernel, whose gate gradients the binding turns into
// input, state, weight and bias gradients with cuBLAS.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace s2s_fast {

constexpr int kLstmCellFusedMaxBatch = 8;

struct LstmCellPointwiseParams {
    int64_t batch;
    int64_t hidden;
    const void* gates;         // [B, 4H] input @ W_ih^T + hx @ W_hh^T, without biases
    int64_t gates_row_stride;  // elements between rows of gates
    const void* bias_ih;       // [4H] contiguous, or nullptr
    const void* bias_hh;       // [4H] contiguous, or nullptr
    const void* cx;            // [B, H]
    int64_t cx_row_stride;
    void* hy;            // [B, H] contiguous
    void* cy;            // [B, H] contiguous
    float* activations;  // [B, 4H] contiguous: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o); nullptr: not saved
};

struct LstmCellFusedParams {
    int64_t batch;  // at most kLstmCellFusedMaxBatch
    int64_t input_size;
    int64_t hidden;
    const void* input;  // [B, I]
    int64_t input_row_stride;
    const void* hx;  // [B, H]
    int64_t hx_row_stride;
    const void* cx;  // [B, H]
    int64_t cx_row_stride;
    const void* weight_ih;  // [4H, I]
    int64_t weight_ih_row_stride;
    const void* weight_hh;  // [4H, H]
    int64_t weight_hh_row_stride;
    const void* bias_ih;  // [4H] contiguous, or nullptr
    const void* bias_hh;  // [4H] contiguous, or nullptr
    void* hy;             // [B, H] contiguous
    void* cy;             // [B, H] contiguous
    float* activations;   // [B, 4H] contiguous, or nullptr
};

struct LstmCellBackwardParams {
    int64_t batch;
    int64_t hidden;
    const void* grad_hy;  // [B, H]
    int64_t grad_hy_row_stride;
    const void* grad_cy;  // [B, H]
    int64_t grad_cy_row_stride;
    const void* cx;  // [B, H]
    int64_t cx_row_stride;
    const float* activations;  // [B, 4H] contiguous, from the forward
    void* grad_gates;          // [B, 4H] contiguous: gradient of the pre-activation gates
    void* grad_cx;             // [B, H] contiguous
};

// T is float, __half or __nv_bfloat16 (instantiated in lstm_cell.cu). Each returns the launch's error status.
template <typename T>
cudaError_t lstm_cell_pointwise_fwd(const LstmCellPointwiseParams& params, cudaStream_t stream);
template <typename T>
cudaError_t lstm_cell_fused_fwd(const LstmCellFusedParams& params, cudaStream_t stream);
template <typename T>
cudaError_t lstm_cell_bwd(const LstmCellBackwardParams& params, cudaStream_t stream);

}  // namespace s2s_fast
