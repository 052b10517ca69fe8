// Fused LSTM layer on the CPU: parameters and declarations of the per-step kernels (lstm_layer_kernels.h defines
// them once per instruction set); lstm_layer.cpp runs the matrix products through ATen around them.
//
// One direction of one layer (see rnn_layer.h for lengths and directions). Gate order i, f, g, o (torch's). Every
// tensor is contiguous; T is float or double.
#pragma once

#include <cstdint>

#include "capability.h"

#include "rnn_layer.h"

namespace s2s_fast::cpu {

template <typename T>
struct LstmStepForwardParams {
    int64_t step;             // s
    int64_t steps;            // T
    int64_t batch;            // B
    int64_t hidden;           // H
    const int64_t* lengths;   // [B] in [0, T], or nullptr: every row runs T steps
    bool reverse;
    const T* input_gates;     // [T, B, 4H]: input @ weight_ih^T + bias_ih + bias_hh; may be `gates` itself: a
                              // position's pre-activations are read before its activations are written
    const T* hidden_gates;    // [B, 4H]: h @ weight_hh^T for the state before this step
    T* h;                     // [B, H] state, advanced in place for the rows that run this step
    T* c;                     // [B, H]
    T* output;                // [T, B, H]: h at each row's time, zero at its padded positions
    T* gates;                 // [T, B, 4H]: the activated gates at each row's time (for the backward), or nullptr
    T* cells;                 // [T, B, H]: c at each row's time (for the backward), or nullptr
};

template <typename T>
struct LstmStepBackwardParams {
    int64_t step;
    int64_t steps;
    int64_t batch;
    int64_t hidden;
    const int64_t* lengths;   // as in the forward
    bool reverse;
    const T* grad_output;     // [T, B, H]
    const T* recurrent;       // [B, H]: the later step's grad_gates @ weight_hh (the gradient of this step's h that
                              // flows back through the later step), or nullptr when this is the last step
    const T* gates;           // [T, B, 4H] and [T, B, H] from the forward
    const T* cells;
    const T* cx;              // [B, H] initial cell state
    T* dh;                    // [B, H]: gradient of the final hidden state, carried while a row has not started
    T* dc;                    // [B, H]: gradient of the cell state after this step, updated in place
    T* grad_gates;            // [T, B, 4H]: pre-activation gradients at each row's time, zero at padded positions
    T* step_grad_gates;       // [B, 4H]: this step's rows of grad_gates (zero for ended rows), or nullptr
};

// One definition per instruction set the library is built with (capability.h), in kernels_*.cpp.
S2S_FAST_CPU_DECLARE_KERNELS(
    template <typename T> void lstm_step_fwd(const LstmStepForwardParams<T>& params);
    template <typename T> void lstm_step_bwd(const LstmStepBackwardParams<T>& params);)

// The step kernels of the instruction set capability() chose (for the bindings).
template <typename T>
inline void run_lstm_step_fwd(const LstmStepForwardParams<T>& params) {
    S2S_FAST_CPU_CALL(lstm_step_fwd, params);
}

template <typename T>
inline void run_lstm_step_bwd(const LstmStepBackwardParams<T>& params) {
    S2S_FAST_CPU_CALL(lstm_step_bwd, params);
}

}  // namespace s2s_fast::cpu
