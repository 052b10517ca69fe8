// Fused LSTM layer step kernels on the CPU (declared in lstm_layer.h), compiled once per instruction set.
//
// Forward step: per running row, the gate pre-activations (the input part plus the hidden part), their activations,
// the new c and h, written to the state, the output at the row's time and (for the backward) the saved gates and c.
// Backward step: per running row, the gradient of h (from the later step through weight_hh, or the final state's, plus
// the output's), then of c and of the gate pre-activations, vectorised over H.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "lstm_layer.h"
#include "vec_math.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

template <typename T>
void lstm_step_fwd(const LstmStepForwardParams<T>& p) {
    constexpr int64_t kWidth = Vec<T>::size();
    const int64_t H = p.hidden, G = 4 * p.hidden;
    at::parallel_for(0, p.active, rnn_step_grain(4 * H), [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
            const int64_t b = rnn_row(p.order, k);
            const int64_t t = rnn_step_time(p.step, p.lengths != nullptr ? p.lengths[b] : p.steps, p.reverse);
            const int64_t row = p.base + k;
            const T* x = p.input_gates + row * G;
            const T* r = p.hidden_gates + k * G;
            T* h = p.h + k * H;
            T* c = p.c + k * H;
            T* out = p.output + (t * p.batch + b) * H;
            T* gates = p.gates != nullptr ? p.gates + row * G : nullptr;
            T* cells = p.cells != nullptr ? p.cells + row * H : nullptr;
            for (int64_t j = 0; j < H; j += kWidth) {
                const int64_t n = std::min(kWidth, H - j);
                const Vec<T> i = sigmoid<T>(Vec<T>::loadu(x + j, n) + Vec<T>::loadu(r + j, n));
                const Vec<T> f = sigmoid<T>(Vec<T>::loadu(x + H + j, n) + Vec<T>::loadu(r + H + j, n));
                const Vec<T> g = accurate_tanh(Vec<T>::loadu(x + 2 * H + j, n) + Vec<T>::loadu(r + 2 * H + j, n));
                const Vec<T> o = sigmoid<T>(Vec<T>::loadu(x + 3 * H + j, n) + Vec<T>::loadu(r + 3 * H + j, n));
                const Vec<T> c_new = at::vec::fmadd(f, Vec<T>::loadu(c + j, n), i * g);
                const Vec<T> h_new = o * accurate_tanh(c_new);
                c_new.store(c + j, n);
                h_new.store(h + j, n);
                h_new.store(out + j, n);
                if (gates != nullptr) {
                    store_strided(gates, H, j, n, i, f, g, o);
                    c_new.store(cells + j, n);
                }
            }
        }
    });
}

template <typename T>
void lstm_step_bwd(const LstmStepBackwardParams<T>& p) {
    constexpr int64_t kWidth = Vec<T>::size();
    const int64_t H = p.hidden, G = 4 * p.hidden;
    const Vec<T> one(T(1));
    at::parallel_for(0, p.active, rnn_step_grain(4 * H), [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
            const int64_t b = rnn_row(p.order, k);
            const int64_t length = p.lengths != nullptr ? p.lengths[b] : p.steps;
            const int64_t t = rnn_step_time(p.step, length, p.reverse);
            const int64_t row = p.base + k;
            // The gradient of this step's h: through the later step when the row ran one, else the final state's.
            const T* dh_in = p.recurrent != nullptr && p.step + 1 < length ? p.recurrent + k * H : p.dh + b * H;
            const T* grad_out = p.grad_output + (t * p.batch + b) * H;
            const T* gates = p.gates + row * G;
            const T* c_now = p.cells + row * H;
            // c before this step: the row's at the previous step (the same run position), or the initial state.
            const T* c_prev = p.step == 0 ? p.cx + b * H : p.cells + (p.previous_base + k) * H;
            T* dc = p.dc + b * H;
            T* grad = p.grad_gates + row * G;
            for (int64_t j = 0; j < H; j += kWidth) {
                const int64_t n = std::min(kWidth, H - j);
                const Vec<T> i = Vec<T>::loadu(gates + j, n);
                const Vec<T> f = Vec<T>::loadu(gates + H + j, n);
                const Vec<T> g = Vec<T>::loadu(gates + 2 * H + j, n);
                const Vec<T> o = Vec<T>::loadu(gates + 3 * H + j, n);
                const Vec<T> tc = accurate_tanh(Vec<T>::loadu(c_now + j, n));
                const Vec<T> dh = Vec<T>::loadu(dh_in + j, n) + Vec<T>::loadu(grad_out + j, n);
                const Vec<T> dc_total = at::vec::fmadd(dh * o, at::vec::fnmadd(tc, tc, one), Vec<T>::loadu(dc + j, n));
                const Vec<T> di = dc_total * g * i * (one - i);
                const Vec<T> df = dc_total * Vec<T>::loadu(c_prev + j, n) * f * (one - f);
                const Vec<T> dg = dc_total * i * at::vec::fnmadd(g, g, one);
                const Vec<T> d_o = dh * tc * o * (one - o);
                (dc_total * f).store(dc + j, n);
                store_strided(grad, H, j, n, di, df, dg, d_o);
            }
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(lstm_step_fwd, LstmStepForwardParams)
S2S_FAST_CPU_INSTANTIATE(lstm_step_bwd, LstmStepBackwardParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
