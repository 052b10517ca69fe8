// Dropout kernel on the CPU (declared in dropout.h), compiled once per instruction set: a loop of 32-bit integer
// multiplies, shifts and xors (the hash of dropout.h), a compare and a multiply, which the compiler vectorises.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "dropout.h"
#include "vec_math.h"

namespace s2s_fast::cpu::CPU_CAPABILITY {

// Elements a task should have at least: a small call stays on one thread.
constexpr int64_t kDropoutGrain = 1 << 16;

template <typename T>
void dropout(const DropoutParams<T>& p) {
    const uint64_t mixed = dropout_seed_mix(p.seed);
    const uint32_t inner_key = dropout_inner_key(mixed);
    const uint32_t threshold = p.threshold;
    const T scale = p.scale;
    // Captured by value: a reference to scale would become a masked load in the loop, which GCC does not vectorise.
    at::parallel_for(0, p.size, kDropoutGrain, [=](int64_t begin, int64_t end) {
        // Blocks that do not cross a multiple of 2^32, so that the index's high half is one constant in each.
        for (int64_t block = begin; block < end;) {
            const uint64_t high = static_cast<uint64_t>(block) >> 32;
            const int64_t block_end = std::min<int64_t>(end, static_cast<int64_t>((high + 1) << 32));
            const uint32_t outer_key = dropout_outer_key(mixed, static_cast<uint32_t>(high));
            const T* __restrict input = p.input + block;
            T* __restrict output = p.output + block;
            const uint32_t base = static_cast<uint32_t>(block);
            const int64_t count = block_end - block;
            // A multiply by 0 or scale, not a branch: the compiler vectorises it (and, as torch's dropout, an
            // infinite input dropped gives NaN).
            for (int64_t j = 0; j < count; ++j) {
                // The hash of dropout.h for index block + j, its keys hoisted.
                const uint32_t hash = mix32(mix32((base + static_cast<uint32_t>(j)) ^ inner_key) + outer_key);
                const T keep = hash >= threshold ? scale : T(0);
                output[j] = input[j] * keep;
            }
            block = block_end;
        }
    });
}

S2S_FAST_CPU_INSTANTIATE(dropout, DropoutParams)

}  // namespace s2s_fast::cpu::CPU_CAPABILITY
