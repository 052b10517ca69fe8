// GRU cell step (torch.nn.GRUCell gate order r, z, n): parameters and host launchers.
//
// The binding computes input_gates = input @ W_ih^T and hidden_gates = hx @ W_hh^T with cuBLAS; the forward kernel
// adds the biases and applies the gate math, saving r, z, n and the hidden part of n in fp32; the backward kernel
// turns the gradient of hy into gradients of both gate pre-activations and the direct part of the hx gradient.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace s2s_fast {

struct GruCellForwardParams {
    int64_t batch;
    int64_t hidden;
    const void* input_gates;  // [B, 3H] input @ W_ih^T, without bias
    int64_t input_gates_row_stride;
    const void* hidden_gates;  // [B, 3H] hx @ W_hh^T, without bias
    int64_t hidden_gates_row_stride;
    const void* bias_ih;  // [3H] contiguous, or nullptr
    const void* bias_hh;  // [3H] contiguous, or nullptr
    const void* hx;       // [B, H]
    int64_t hx_row_stride;
    void* hy;            // [B, H] contiguous
    float* activations;  // [B, 4H] contiguous: r, z, n, W_hn h + b_hn; nullptr: not saved
};

struct GruCellBackwardParams {
    int64_t batch;
    int64_t hidden;
    const void* grad_hy;  // [B, H]
    int64_t grad_hy_row_stride;
    const void* hx;  // [B, H]
    int64_t hx_row_stride;
    const float* activations;  // [B, 4H] contiguous, from the forward
    void* grad_input_gates;    // [B, 3H] contiguous: gradient of input @ W_ih^T + b_ih
    void* grad_hidden_gates;   // [B, 3H] contiguous: gradient of hx @ W_hh^T + b_hh
    void* grad_hx_direct;      // [B, H] contiguous: gradient of hx through hy = n + z (hx - n) alone
};

// T is float, __half or __nv_bfloat16 (instantiated in gru_cell.cu). Each returns the launch's error status.
template <typename T>
cudaError_t gru_cell_fwd(const GruCellForwardParams& params, cudaStream_t stream);
template <typename T>
cudaError_t gru_cell_bwd(const GruCellBackwardParams& params, cudaStream_t stream);

}  // namespace s2s_fast
