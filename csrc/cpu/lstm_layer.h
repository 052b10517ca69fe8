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
    const T* input_gates;     // [rows, 4H] (rnn_layer.h): input @ weight_ih^T + bias_ih + bias_hh; may be `gates`
                              // itself: a row's pre-activations are read before its activations are written
    const T* hidden_gates;    // [active, 4H]: h @ weight_hh^T for the state before this step, in run order
    T* h;                     // [B, H] state in run order, advanced in place for the rows that run this step
    T* c;                     // [B, H], likewise
    T* output;                // [T, B, H]: h at each row's time (its padded positions are left as they are)
    T* gates;                 // [rows, 4H]: the activated gates (for the backward), or nullptr
    T* cells;                 // [rows, H]: c (for the backward), or nullptr
    const int64_t* order;     // [B]: the batch row at each run position, or nullptr: the batch's order
    int64_t active;           // rows running this step: run positions 0 .. active - 1
    int64_t base;             // the buffer row of this step's run position 0
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
    const T* recurrent;       // [active of the later step, H], run order: the later step's grad_gates @ weight_hh (the
                              // gradient of this step's h that flows back through the later step), or nullptr when
                              // this is the last step
    const T* gates;           // [rows, 4H] and [rows, H] from the forward
    const T* cells;
    const T* cx;              // [B, H] initial cell state
    T* dh;                    // [B, H]: gradient of the final hidden state, read at a row's last step
    T* dc;                    // [B, H]: gradient of the cell state after this step, updated in place
    T* grad_gates;            // [rows, 4H]: pre-activation gradients
    const int64_t* order;     // as in the forward
    int64_t active;
    int64_t base;
    int64_t previous_base;    // the buffer row of the previous step's run position 0 (read when step > 0)
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
