// Dropout on the CPU with a counter-based mask: parameters and kernel declarations.
//
// Element i of a call is kept when hash(i, seed) >= threshold (threshold = p * 2^32), and then scaled by
// 1 / (1 - p); else it is zero. The hash (two rounds of a 32-bit integer mixer, Wellons' lowbias32, keyed by the
// call's 64-bit seed) depends only on the element's index and the seed, so the mask is the same on any number of
// threads, costs a few vector instructions an element (torch's bernoulli_ on a CPU draws its mask at about 12 ns an
// element, on one thread), and the backward makes it again from the seed instead of keeping it. T is float or double.
#pragma once

#include <cstdint>

#include "capability.h"

namespace s2s_fast::cpu {

template <typename T>
struct DropoutParams {
    int64_t size;        // elements
    const T* input;      // [size], contiguous
    T* output;           // [size]
    uint64_t seed;       // the call's key
    uint32_t threshold;  // kept when hash >= threshold
    T scale;             // 1 / (1 - p)
};

// The 32-bit mixer both rounds use (Chris Wellons' lowbias32: bias 0.17 on the avalanche test).
inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

// The mask's hash of element `index` under `seed`; the kernels compute the same in their loops (the index's high
// half and the seed folded into two keys once per block of 2^32 elements).
inline uint32_t dropout_keys_low(uint64_t seed, uint32_t index_high) {
    return static_cast<uint32_t>(seed) ^ mix32(index_high + 0x9e3779b9U);
}
inline uint32_t dropout_key_high(uint64_t seed) { return static_cast<uint32_t>(seed >> 32); }
inline uint32_t dropout_hash(uint64_t index, uint64_t seed) {
    const uint32_t low = dropout_keys_low(seed, static_cast<uint32_t>(index >> 32));
    return mix32(mix32(static_cast<uint32_t>(index) ^ low) + dropout_key_high(seed));
}

S2S_FAST_CPU_DECLARE_KERNELS(template <typename T> void dropout(const DropoutParams<T>& params);)

}  // namespace s2s_fast::cpu
