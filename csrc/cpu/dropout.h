// Dropout on the CPU with a counter-based mask: parameters and kernel declarations.
//
// Element i of a call is kept when hash(i, seed) >= threshold (threshold = p * 2^32), and then scaled by
// 1 / (1 - p); else it is zero. The hash (two rounds of a 32-bit integer mixer, Wellons' lowbias32, keyed by the
// call's 64-bit seed; below) depends only on the element's index and the seed, so the mask is the same on any number
// of threads, costs a few vector instructions an element (torch's bernoulli_ on a CPU draws its mask at about 12 ns
// an element, on one thread), and the backward makes it again from the seed instead of keeping it. T is float or
// double.
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

// The call's seed spread over 64 bits (splitmix64's finaliser), so that both keys depend on every bit of it.
inline uint64_t dropout_seed_mix(uint64_t seed) {
    seed += 0x9e3779b97f4a7c15ULL;
    seed = (seed ^ (seed >> 30)) * 0xbf58476d1ce4e5b9ULL;
    seed = (seed ^ (seed >> 27)) * 0x94d049bb133111ebULL;
    return seed ^ (seed >> 31);
}

// The mask's hash of element `index` under `seed`: mix32(mix32(low ^ inner) + outer), where low is the index's low
// half, inner the mixed seed's low half, and outer its high half xor a mix of the index's high half (so that the
// blocks of 2^32 elements of a large tensor are not one another's permutations). The kernel computes the keys once
// per call and per block; s2s_fast.testing.dropout_hash computes the same in numpy, for the tests.
inline uint32_t dropout_inner_key(uint64_t mixed_seed) { return static_cast<uint32_t>(mixed_seed); }
inline uint32_t dropout_outer_key(uint64_t mixed_seed, uint32_t index_high) {
    return static_cast<uint32_t>(mixed_seed >> 32) ^ mix32(index_high + 0x9e3779b9U);
}

S2S_FAST_CPU_DECLARE_KERNELS(template <typename T> void dropout(const DropoutParams<T>& params);)

}  // namespace s2s_fast::cpu
