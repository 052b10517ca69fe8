// Vectorised math the CPU kernels share, compiled once per instruction set (see capability.h).
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

// Explicit float and double instantiations of a kernel taking Params<T>.
#define S2S_FAST_CPU_INSTANTIATE(function, Params)                           \
    template void function<float>(const Params<float>&);                     \
    template void function<double>(const Params<double>&);

namespace s2s_fast::cpu::CPU_CAPABILITY {

template <typename T>
using Vec = at::vec::Vectorized<T>;

// tanh(x). float: a rational minimax approximation (numerator of degree 13, denominator 6, Eigen's fast float tanh)
// on x clamped to +-7.9, where tanh rounds to +-1 in float, within a few ulp: fused multiply-adds and one
// reciprocal, several times the speed of Sleef's tanhf. double: ATen's (Sleef's) vectorised tanh.
template <typename T>
inline Vec<T> tanh(const Vec<T>& x) {
    return x.tanh();
}

// Sleef's tanh (within an ulp), for the RNN layers: their error compounds over the steps, where the faster
// rational tanh below left an LSTM's c past twice the float32 reference's error after 20 steps.
template <typename T>
inline Vec<T> accurate_tanh(const Vec<T>& x) {
    return x.tanh();
}

// p / q for q > 0 of moderate size: on AVX-512 and AVX2 the hardware reciprocal estimate (14 or 12 bits) refined by
// two Newton steps to within an ulp or so (one step left some gradients just past twice the reference's float32
// error), a few multiply-adds where a division would hold up the pipeline for ten cycles or more.
inline Vec<float> divide_positive(const Vec<float>& p, const Vec<float>& q) {
#if defined(CPU_CAPABILITY_AVX512)
    const __m512 two = _mm512_set1_ps(2.0f);
    __m512 estimate = _mm512_rcp14_ps(q);
    estimate = _mm512_mul_ps(estimate, _mm512_fnmadd_ps(q, estimate, two));
    estimate = _mm512_mul_ps(estimate, _mm512_fnmadd_ps(q, estimate, two));
    return _mm512_mul_ps(p, estimate);
#elif defined(CPU_CAPABILITY_AVX2)
    const __m256 two = _mm256_set1_ps(2.0f);
    __m256 estimate = _mm256_rcp_ps(q);
    estimate = _mm256_mul_ps(estimate, _mm256_fnmadd_ps(q, estimate, two));
    estimate = _mm256_mul_ps(estimate, _mm256_fnmadd_ps(q, estimate, two));
    return _mm256_mul_ps(p, estimate);
#else
    return p / q;
#endif
}

// x clamped to [-bound, bound], a NaN kept: vminps and vmaxps return their second operand when either is NaN, so
// with the bound first a NaN x comes back as itself, in two instructions where at::vec::minimum and maximum spend
// three each on the same promise (12 % of the attention's score loop on the AVX2 EPYC, 2026-12-05).
inline Vec<float> clamp_symmetric(const Vec<float>& x, float bound) {
#if defined(CPU_CAPABILITY_AVX512)
    return _mm512_min_ps(_mm512_set1_ps(bound), _mm512_max_ps(_mm512_set1_ps(-bound), x));
#elif defined(CPU_CAPABILITY_AVX2)
    return _mm256_min_ps(_mm256_set1_ps(bound), _mm256_max_ps(_mm256_set1_ps(-bound), x));
#else
    return at::vec::minimum(at::vec::maximum(x, Vec<float>(-bound)), Vec<float>(bound));
#endif
}

template <>
inline Vec<float> tanh<float>(const Vec<float>& x) {
    const Vec<float> clamped = clamp_symmetric(x, 7.90531110763549805f);
    const Vec<float> x2 = clamped * clamped;
    Vec<float> p = at::vec::fmadd(x2, Vec<float>(-2.76076847742355e-16f), Vec<float>(2.00018790482477e-13f));
    p = at::vec::fmadd(x2, p, Vec<float>(-8.60467152213735e-11f));
    p = at::vec::fmadd(x2, p, Vec<float>(5.12229709037114e-08f));
    p = at::vec::fmadd(x2, p, Vec<float>(1.48572235717979e-05f));
    p = at::vec::fmadd(x2, p, Vec<float>(6.37261928875436e-04f));
    p = at::vec::fmadd(x2, p, Vec<float>(4.89352455891786e-03f));
    p = p * clamped;
    Vec<float> q = at::vec::fmadd(x2, Vec<float>(1.19825839466702e-06f), Vec<float>(1.18534705686654e-04f));
    q = at::vec::fmadd(x2, q, Vec<float>(2.26843463243900e-03f));
    q = at::vec::fmadd(x2, q, Vec<float>(4.89352518554385e-03f));
    return divide_positive(p, q);
}

// 1 / (1 + exp(-x)). float: Sleef's expf on x clamped to +-80 (where the result is within an ulp of 0 or 1 and
// exp stays finite, so the reciprocal estimate never meets infinity) and divide_positive; double: a division.
template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
    const Vec<T> one(T(1));
    return one / (one + x.neg().exp());
}

template <>
inline Vec<float> sigmoid<float>(const Vec<float>& x) {
    const Vec<float> clamped = clamp_symmetric(x, 80.0f);
    const Vec<float> one(1.0f);
    return divide_positive(one, one + clamped.neg().exp());
}

template <typename T>
inline T sum(const Vec<T>& x) {
    return at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, x);
}

// sum_i a[i] * b[i]
template <typename T>
inline T dot(const T* a, const T* b, int64_t size) {
    constexpr int64_t kWidth = Vec<T>::size();
    Vec<T> total(T(0));
    int64_t i = 0;
    for (; i + kWidth <= size; i += kWidth) total = at::vec::fmadd(Vec<T>::loadu(a + i), Vec<T>::loadu(b + i), total);
    T tail = T(0);
    for (; i < size; ++i) tail += a[i] * b[i];
    return sum(total) + tail;
}

// y[i] += alpha * x[i]
template <typename T>
inline void axpy(T* y, T alpha, const T* x, int64_t size) {
    constexpr int64_t kWidth = Vec<T>::size();
    const Vec<T> scale(alpha);
    int64_t i = 0;
    for (; i + kWidth <= size; i += kWidth) {
        at::vec::fmadd(scale, Vec<T>::loadu(x + i), Vec<T>::loadu(y + i)).store(y + i);
    }
    for (; i < size; ++i) y[i] += alpha * x[i];
}

// Stores `count` lanes of each vector, the k-th at base + k * stride + offset (an RNN row's gates, H apart).
template <typename T, typename... Vectors>
inline void store_strided(T* base, int64_t stride, int64_t offset, int64_t count, const Vectors&... vectors) {
    int64_t k = 0;
    (vectors.store(base + (k++) * stride + offset, count), ...);
}

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
