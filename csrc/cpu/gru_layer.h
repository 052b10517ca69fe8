// Fused GRU layer on the CPU: parameters and declarations of the per-step kernels (gru_layer_kernels.h defines them
// once per instruction set); gru_layer.cpp runs the matrix products through ATen around them.
//
// One direction of one layer (see rnn_layer.h for lengths and directions), torch's gate order r, z, n:
// r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r * (h_n + b_hn)), h' = (1 - z) * n + z * h, where
// x_* is the input part with bias_ih (and bias_hh's r and z parts) and h_* = h @ weight_hh^T. Every tensor is
// contiguous; T is float or double.
#pragma once

#include <cstdint>

#include "capability.h"

#include "rnn_layer.h"

namespace s2s_fast::cpu {

template <typename T>
struct GruStepForwardParams {
    int64_t step;             // s
    int64_t steps;            // T
    int64_t batch;            // B
    int64_t hidden;           // H
    const int64_t* lengths;   // [B] in [0, T], or nullptr: every row runs T steps
    bool reverse;
    const T* input_gates;     // [rows, 3H] (rnn_layer.h): input @ weight_ih^T + bias_ih + (bias_hh's r and z parts)
    const T* hidden_gates;    // [active, 3H]: h @ weight_hh^T for the state before this step, in run order
    const T* bias_hn;         // [H]: bias_hh's n part, or nullptr
    T* h;                     // [B, H] state in run order, advanced in place for the rows that run this step
    T* output;                // [T, B, H]: h at each row's time (its padded positions are left as they are)
    T* gates;                 // [rows, 4H]: r, z, n and h_n + b_hn (for the backward), or nullptr
    const int64_t* order;     // [B]: the batch row at each run position, or nullptr: the batch's order
    int64_t active;           // rows running this step: run positions 0 .. active - 1
    int64_t base;             // the buffer row of this step's run position 0
};

template <typename T>
struct GruStepBackwardParams {
    int64_t step;
    int64_t steps;
    int64_t batch;
    int64_t hidden;
    const int64_t* lengths;   // as in the forward
    bool reverse;
    const T* grad_output;     // [T, B, H]
    const T* recurrent;       // [active of the later step, H], run order: the later step's grad_hidden_gates @
                              // weight_hh, or nullptr at the last step
    const T* gates;           // [rows, 4H] from the forward
    const T* output;          // [T, B, H] from the forward (h before a step is the row's previous output)
    const T* hx;              // [B, H] initial state
    T* dh;                    // [B, H]: the gradient of h after this step that does not flow through weight_hh (the
                              // final state's while a row has not started, then z * dh), updated in place
    T* grad_input_gates;      // [rows, 3H]: gradients of x_r, x_z, x_n
    T* grad_hidden_gates;     // [rows, 3H]: gradients of h_r, h_z, h_n + b_hn
    const int64_t* order;     // as in the forward
    int64_t active;
    int64_t base;
};

// One definition per instruction set the library is built with (capability.h), in kernels_*.cpp.
S2S_FAST_CPU_DECLARE_KERNELS(
    template <typename T> void gru_step_fwd(const GruStepForwardParams<T>& params);
    template <typename T> void gru_step_bwd(const GruStepBackwardParams<T>& params);)

// The step kernels of the instruction set capability() chose (for the bindings).
template <typename T>
inline void run_gru_step_fwd(const GruStepForwardParams<T>& params) {
    S2S_FAST_CPU_CALL(gru_step_fwd, params);
}

template <typename T>
inline void run_gru_step_bwd(const GruStepBackwardParams<T>& params) {
    S2S_FAST_CPU_CALL(gru_step_bwd, params);
}

}  // namespace s2s_fast::cpu
