// Fused GRU layer step kernels on the CPU (declared in gru_layer.h), compiled once per instruction set.
//
// Forward step: per running row, r, z, n and the new h from the input part and the hidden part, written to the state,
// the output at the row's time and (for the backward) the saved gates. Backward step: per running row, the gradient
// of h (through weight_hh from the later step, plus the part that bypasses it, plus the output's), then of the gates'
// input and hidden parts, vectorised over H.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "gru_layer.h"
#include "vec_math.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

template <typename T>
void gru_step_fwd(const GruStepForwardParams<T>& p) {
    constexpr int64_t kWidth = Vec<T>::size();
    const int64_t H = p.hidden, G = 3 * p.hidden, S = 4 * p.hidden;
    at::parallel_for(0, p.active, rnn_step_grain(G), [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
            const int64_t b = rnn_row(p.order, k);
            const int64_t t = rnn_step_time(p.step, p.lengths != nullptr ? p.lengths[b] : p.steps, p.reverse);
            const int64_t row = p.base + k;
            const T* x = p.input_gates + row * G;
            const T* r_h = p.hidden_gates + k * G;
            T* h = p.h + k * H;
            T* out = p.output + (t * p.batch + b) * H;
            T* gates = p.gates != nullptr ? p.gates + row * S : nullptr;
            for (int64_t j = 0; j < H; j += kWidth) {
                const int64_t n = std::min(kWidth, H - j);
                const Vec<T> r = sigmoid<T>(Vec<T>::loadu(x + j, n) + Vec<T>::loadu(r_h + j, n));
                const Vec<T> z = sigmoid<T>(Vec<T>::loadu(x + H + j, n) + Vec<T>::loadu(r_h + H + j, n));
                Vec<T> hn = Vec<T>::loadu(r_h + 2 * H + j, n);
                if (p.bias_hn != nullptr) hn = hn + Vec<T>::loadu(p.bias_hn + j, n);
                const Vec<T> candidate = accurate_tanh<T>(at::vec::fmadd(r, hn, Vec<T>::loadu(x + 2 * H + j, n)));
                const Vec<T> h_new = at::vec::fmadd(z, Vec<T>::loadu(h + j, n) - candidate, candidate);
                h_new.store(h + j, n);
                h_new.store(out + j, n);
                if (gates != nullptr) store_strided(gates, H, j, n, r, z, candidate, hn);
            }
        }
    });
}

template <typename T>
void gru_step_bwd(const GruStepBackwardParams<T>& p) {
    constexpr int64_t kWidth = Vec<T>::size();
    const int64_t H = p.hidden, G = 3 * p.hidden, S = 4 * p.hidden;
    const Vec<T> one(T(1));
    at::parallel_for(0, p.active, rnn_step_grain(G), [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
            const int64_t b = rnn_row(p.order, k);
            const int64_t length = p.lengths != nullptr ? p.lengths[b] : p.steps;
            const int64_t t = rnn_step_time(p.step, length, p.reverse);
            const int64_t row = p.base + k;
            // Through the later step's weight_hh when the row ran one (plus what bypassed it, kept in dh).
            const T* recurrent = p.recurrent != nullptr && p.step + 1 < length ? p.recurrent + k * H : nullptr;
            const T* grad_out = p.grad_output + (t * p.batch + b) * H;
            const T* gates = p.gates + row * S;
            // h before this step: the row's previous output (time t - 1, or t + 1 in reverse), or the initial state.
            const T* h_prev = p.step == 0 ? p.hx + b * H : p.output + ((p.reverse ? t + 1 : t - 1) * p.batch + b) * H;
            T* dh_carry = p.dh + b * H;
            T* grad_x = p.grad_input_gates + row * G;
            T* grad_h = p.grad_hidden_gates + row * G;
            for (int64_t j = 0; j < H; j += kWidth) {
                const int64_t n = std::min(kWidth, H - j);
                const Vec<T> r = Vec<T>::loadu(gates + j, n);
                const Vec<T> z = Vec<T>::loadu(gates + H + j, n);
                const Vec<T> candidate = Vec<T>::loadu(gates + 2 * H + j, n);
                const Vec<T> hn = Vec<T>::loadu(gates + 3 * H + j, n);
                Vec<T> dh = Vec<T>::loadu(dh_carry + j, n) + Vec<T>::loadu(grad_out + j, n);
                if (recurrent != nullptr) dh = dh + Vec<T>::loadu(recurrent + j, n);
                const Vec<T> d_candidate = dh * (one - z) * at::vec::fnmadd(candidate, candidate, one);
                const Vec<T> dz = dh * (Vec<T>::loadu(h_prev + j, n) - candidate) * z * (one - z);
                const Vec<T> dr = d_candidate * hn * r * (one - r);
                const Vec<T> dhn = d_candidate * r;
                (dh * z).store(dh_carry + j, n);
                store_strided(grad_x, H, j, n, dr, dz, d_candidate);
                store_strided(grad_h, H, j, n, dr, dz, dhn);
            }
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(gru_step_fwd, GruStepForwardParams)
S2S_FAST_CPU_INSTANTIATE(gru_step_bwd, GruStepBackwardParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
