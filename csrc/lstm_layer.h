// Persistent LSTM layer: one cooperative launch runs all T steps of one direction of a layer, W_hh held in shared
// memory spread over the multiprocessors, a grid-wide barrier between steps. Parameters and host launchers.
//
// Block g owns hidden units [g * J, (g + 1) * J), J = ceil(H / multiprocessors), and keeps their 4J rows of W_hh in
// shared memory for all steps. Forward step t: the block streams h_{t-1} [B, H] from a global double buffer through
// shared memory in chunks of the reduction (double-buffered cp.async, so that the copy of the next chunk overlaps
// the product of this one; the whole vector at once when H is short), multiplies each chunk by its rows of W_hh
// (fp32 accumulation; tensor cores, mma.m16n8k16 fed by ldmatrix, for float16 and bfloat16, CUDA-core FMA for
// float32), then each thread applies the gate math to its (unit, batch row) pairs, up to 4 of them, with the input
// gates (input @ W_ih^T, one cuBLAS GEMM before the launch) and the biases, writes h_t to the other buffer, and the
// grid synchronises. A pair's cell state stays in its thread's registers across steps. Backward walks the steps in
// reverse with the block's J columns of W_hh on chip, streaming the gate gradients [B, 4H] of the later step the same
// way to get the gradient of h; the weight, bias and input gradients are GEMMs over all steps afterwards (cuBLAS, in
// the binding).
//
// Per-row lengths and reverse follow s2s_fast/reference/time_loop.py: row b runs the steps t < lengths[b] (in
// reverse order when reverse), its output is zero and its state held at the other steps.
//
// Served sizes (see lstm_layer_plan): J * B <= 1024, and the block's rows of W_hh, two chunk buffers of the vector
// (one for a short vector) and the fp32 partial products fitting the opt-in shared memory of one block.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace s2s_fast {

// Rows of the global scratch buffers (h double buffer, gate gradients) are padded to whole 16-byte vectors.
__host__ __device__ inline int64_t lstm_layer_padded(int64_t length, int element_size) {
    const int64_t vector = 16 / element_size;
    return (length + vector - 1) / vector * vector;
}

// (hidden unit, batch row) pairs one block serves: J * B at most this.
constexpr int64_t kLstmLayerMaxPairs = 1024;

struct LstmLayerPlan {
    int units_per_block = 0;  // J
    int blocks = 0;           // 0: this size is not served
    int64_t shared_bytes = 0;
    int64_t chunk = 0;  // reduction columns streamed through shared memory at a time
};

struct LstmLayerForwardParams {
    int64_t steps;   // T
    int64_t batch;   // B
    int64_t hidden;  // H
    bool reverse;
    const void* input_gates;  // [T, B, 4H] contiguous: input @ W_ih^T, without biases
    const void* weight_hh;    // [4H, H] contiguous
    const void* bias_ih;      // [4H] contiguous, or nullptr
    const void* bias_hh;      // [4H] contiguous, or nullptr
    const int64_t* lengths;   // [B] in [0, T], or nullptr (all T)
    const void* hx;           // [B, H] contiguous
    const void* cx;           // [B, H] contiguous
    void* output;             // [T, B, H]
    void* hy;                 // [B, H]
    void* cy;                 // [B, H]
    void* state_buffer;       // [2, B, lstm_layer_padded(H)] zero-filled: h double buffer
    // Saved for the backward, all nullptr for inference:
    float* activations;  // [T, B, 4H] activated gates (zeros at skipped steps)
    float* cell_states;  // [T, B, H] cell state after each step (held value at invalid steps)
    void* hidden_prev;   // [T, B, H] the hidden state each step read
};

struct LstmLayerBackwardParams {
    int64_t steps;
    int64_t batch;
    int64_t hidden;
    bool reverse;
    const void* weight_hh;     // [4H, H] contiguous
    const int64_t* lengths;    // [B] or nullptr
    const void* cx;            // [B, H] contiguous
    const float* activations;  // [T, B, 4H] from the forward
    const float* cell_states;  // [T, B, H] from the forward
    const void* grad_output;   // [T, B, H] contiguous
    const void* grad_hy;       // [B, H] contiguous
    const void* grad_cy;       // [B, H] contiguous
    void* grad_gates;          // [T, B, lstm_layer_padded(4H)] zero-filled: gradient of the pre-activation gates
    void* grad_hx;             // [B, H]
    void* grad_cx;             // [B, H]
};

// T is float, __half or __nv_bfloat16 (instantiated in lstm_layer.cu). The plan is for the current device;
// plan->blocks == 0 when the size is not served.
template <typename T>
cudaError_t lstm_layer_plan(int64_t batch, int64_t hidden, bool backward, LstmLayerPlan* plan);
template <typename T>
cudaError_t lstm_layer_fwd(const LstmLayerForwardParams& params, cudaStream_t stream);
template <typename T>
cudaError_t lstm_layer_bwd(const LstmLayerBackwardParams& params, cudaStream_t stream);

}  // namespace s2s_fast
