// LSTM gate math shared by the cell and the persistent layer kernels, in fp32.
#pragma once

#include "common.h"

namespace s2s_fast {

// Activated gates of one unit: sigmoid(i), sigmoid(f), tanh(g), sigmoid(o).
struct LstmActivations {
    float in_gate;
    float forget_gate;
    float cell_gate;
    float out_gate;
};

__device__ __forceinline__ LstmActivations lstm_activate(float pre_in, float pre_forget, float pre_cell,
                                                         float pre_out) {
    return {sigmoid(pre_in), sigmoid(pre_forget), tanhf(pre_cell), sigmoid(pre_out)};
}

__device__ __forceinline__ float lstm_next_cell(const LstmActivations& act, float cx) {
    return act.forget_gate * cx + act.in_gate * act.cell_gate;
}

// Gradients of the pre-activation gates and of the previous cell state from the gradients reaching hy and cy.
struct LstmGateGrads {
    float in_gate;
    float forget_gate;
    float cell_gate;
    float out_gate;
    float cx;
};

__device__ __forceinline__ LstmGateGrads lstm_backward(const LstmActivations& act, float cx, float grad_hy,
                                                       float grad_cy) {
    const float cy = lstm_next_cell(act, cx);
    const float tanh_cy = tanhf(cy);
    const float grad_cell = grad_cy + grad_hy * act.out_gate * (1.0f - tanh_cy * tanh_cy);
    LstmGateGrads grads;
    grads.in_gate = grad_cell * act.cell_gate * act.in_gate * (1.0f - act.in_gate);
    grads.forget_gate = grad_cell * cx * act.forget_gate * (1.0f - act.forget_gate);
    grads.cell_gate = grad_cell * act.in_gate * (1.0f - act.cell_gate * act.cell_gate);
    grads.out_gate = grad_hy * tanh_cy * act.out_gate * (1.0f - act.out_gate);
    grads.cx = grad_cell * act.forget_gate;
    return grads;
}

}  // namespace s2s_fast
