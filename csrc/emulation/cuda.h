// CUDA's execution model on the CPU: what the kernels of csrc/ use of the CUDA language and runtime, as plain C++.
//
// The kernel files are compiled unchanged by the host compiler with csrc/emulation/include first on the include path;
// its cuda_runtime.h, cuda_fp16.h, cuda_bf16.h and cooperative_groups.h all land here. A launch runs every thread of
// the grid as a fiber with a stack of its own, on the calling OS thread:
//  - __syncthreads, warp collectives (shuffles, mma.sync) and the cooperative grid sync really block: a thread
//    stops there until every thread the barrier names has arrived (threads that exited are not waited for, as on
//    sm_70 and later; a warp collective or grid sync that can never complete is reported as a deadlock);
//  - between barriers the threads of the running blocks are resumed in an order drawn from a seeded generator
//    (S2S_FAST_CUDA_EMULATE_SEED; the same seed gives the same schedule), so a missing barrier can change results;
//  - blocks of an ordinary launch run a few at a time in a random order; a cooperative launch runs every block at
//    once and refuses a grid larger than the emulated GPU can hold, as cudaLaunchCooperativeKernel does;
//  - dynamic shared memory is allocated per block with the launch's exact size and filled with 0xff bytes (NaN in
//    every float format), so reading what no thread wrote shows; launches past 48 KiB need the opt-in attribute,
//    past the GPU's opt-in maximum they fail;
//  - device queries answer as the GPU named by S2S_FAST_CUDA_EMULATE (h100, h200; 1 means h100) would.
// What it cannot show: speed, and the real memory model (every load sees every earlier store, caches included).
#pragma once

#define S2S_FAST_CUDA_EMULATION 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __shared__ is left undefined on purpose: kernels take shared memory through s2s_fast::dynamic_shared (common.h).

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

// ---- float16 and bfloat16 as bit patterns, with CUDA's round-to-nearest-even conversions ----

struct __half {
    uint16_t bits;
};
struct __nv_bfloat16 {
    uint16_t bits;
};

namespace s2s_fast::emulation {

inline uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return bits;
}

inline float bits_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

inline float half_to_float(uint16_t half) {
    const uint32_t sign = uint32_t(half & 0x8000u) << 16;
    const uint32_t exponent = (half >> 10) & 0x1fu;
    const uint32_t mantissa = half & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
    // Subnormal (or zero): mantissa * 2^-24.
    const float magnitude = std::ldexp(float(mantissa), -24);
    return sign ? -magnitude : magnitude;
}

inline uint16_t float_to_half(float value) {
    const uint32_t bits = float_bits(value);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const float magnitude = std::fabs(value);
    if (std::isnan(value)) return uint16_t(sign | 0x7e00u);
    if (magnitude >= 65520.0f) return uint16_t(sign | 0x7c00u);  // rounds to infinity
    if (magnitude < 6.103515625e-05f) {
        // Subnormal range: a multiple of 2^-24, rounded to nearest even by the float arithmetic itself.
        const float scaled = std::nearbyint(magnitude * 16777216.0f);
        return uint16_t(sign | uint16_t(scaled));
    }
    const uint32_t exponent = ((bits >> 23) & 0xffu) - 112;
    uint32_t mantissa = bits & 0x7fffffu;
    uint32_t half = (exponent << 10) | (mantissa >> 13);
    const uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: still right
    return uint16_t(sign | half);
}

inline float bfloat16_to_float(uint16_t bfloat16) { return bits_float(uint32_t(bfloat16) << 16); }

inline uint16_t float_to_bfloat16(float value) {
    const uint32_t bits = float_bits(value);
    if (std::isnan(value)) return uint16_t((bits >> 16) | 0x40u);
    const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t((bits + rounding) >> 16);
}

}  // namespace s2s_fast::emulation

inline float __half2float(__half value) { return s2s_fast::emulation::half_to_float(value.bits); }
inline __half __float2half_rn(float value) { return __half{s2s_fast::emulation::float_to_half(value)}; }
inline float __bfloat162float(__nv_bfloat16 value) { return s2s_fast::emulation::bfloat16_to_float(value.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float value) {
    return __nv_bfloat16{s2s_fast::emulation::float_to_bfloat16(value)};
}

// ---- runtime API ----

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorInvalidDevice = 101,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
    cudaErrorCooperativeLaunchTooLarge = 720,
    cudaErrorNotSupported = 801,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMaxRegistersPerBlock = 12,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrMaxThreadsPerMultiProcessor = 39,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
    cudaDevAttrMaxRegistersPerMultiprocessor = 82,
    cudaDevAttrCooperativeLaunch = 95,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
    cudaDevAttrMaxBlocksPerMultiprocessor = 106,
    cudaDevAttrReservedSharedMemoryPerBlock = 111,
};

enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaDeviceSynchronize();
// The error's name and, for a failure the emulation diagnosed (a deadlock, an exited lane in a shuffle, a stack
// overflow), what it found.
const char* cudaGetErrorString(cudaError_t error);

namespace s2s_fast::emulation {

// Kernels are told apart by their address; the attributes and occupancy below are per kernel.
cudaError_t set_max_dynamic_shared(const void* kernel, int bytes);
cudaError_t max_active_blocks(int* blocks, const void* kernel, int threads, size_t shared_bytes);
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t shared_bytes, bool cooperative,
                   const std::function<void()>& body);

template <typename Kernel>
const void* kernel_key(Kernel* kernel) {
    return reinterpret_cast<const void*>(kernel);
}

}  // namespace s2s_fast::emulation

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attribute, int value) {
    if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
    return s2s_fast::emulation::set_max_dynamic_shared(s2s_fast::emulation::kernel_key(kernel), value);
}

template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel* kernel, int threads,
                                                          size_t shared_bytes) {
    return s2s_fast::emulation::max_active_blocks(blocks, s2s_fast::emulation::kernel_key(kernel), threads,
                                                  shared_bytes);
}

// ---- what a running thread sees ----

namespace s2s_fast::emulation {

struct ThreadContext {
    dim3 thread_idx;
    dim3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

// The emulated thread running now on this OS thread (set by the scheduler before it resumes a fiber).
extern thread_local const ThreadContext* current_thread;

void sync_block();
void sync_grid();
unsigned char* block_shared_memory();
// Warp collectives: each lane of `mask` deposits `count` 32-bit words; the call returns once every lane of the mask
// has deposited, with the 32 lanes' deposits (valid until this lane's next collective).
struct LaneWords {
    uint32_t words[8];
};
enum class Collective { kShuffle, kSyncWarp, kMma, kLoadMatrix };
const LaneWords* warp_collective(unsigned mask, Collective kind, const uint32_t* words, int count);
int lane_id();
// cp.async: the copy lands in shared memory at the latest when a later async_wait lets its group complete (a
// missing wait reads what was there before), and at random before that, when the thread reaches a barrier (a copy
// into a buffer other threads still read shows); it reads the global source when it lands.
void async_copy(void* shared, const void* global, size_t bytes);
// cp.async.commit_group: the copies issued since the last commit form a group.
void async_commit();
// cp.async.wait_group N: every group but the newest N committed ones completes.
void async_wait(int newest_pending);
// Ends the launch with cudaErrorLaunchFailure and this message (the thread that calls it never runs again).
[[noreturn]] void fail(const char* message);

// Source lane of a shuffle, as PTX's shfl.sync defines it: within segments of `width` lanes, a source outside the
// segment leaves the lane its own value.
enum class ShuffleMode { kIndex, kXor, kDown, kUp };

inline int shuffle_source(ShuffleMode mode, int lane, int argument, int width) {
    const int first = lane & ~(width - 1), end = first + width;
    switch (mode) {
        case ShuffleMode::kIndex: return first + (argument & (width - 1));
        case ShuffleMode::kXor: return (lane ^ argument) < end ? lane ^ argument : lane;
        case ShuffleMode::kDown: return lane + argument < end ? lane + argument : lane;
        case ShuffleMode::kUp: return lane - argument >= first ? lane - argument : lane;
    }
    return lane;
}

template <typename T>
T shuffle(unsigned mask, T value, ShuffleMode mode, int argument, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
    uint32_t words[2] = {0, 0};
    std::memcpy(words, &value, sizeof(T));
    const LaneWords* lanes = warp_collective(mask, Collective::kShuffle, words, 2);
    const int source = shuffle_source(mode, lane_id(), argument, width);
    if (!((mask >> source) & 1u)) fail("a shuffle reads a lane outside its mask (undefined on a GPU)");
    T result;
    std::memcpy(&result, lanes[source].words, sizeof(T));
    return result;
}

// tanh.approx.f32: hardware tanh with a relative error below 2^-10.99 (PTX ISA); emulated as the accurate value
// truncated to 11 significant bits, an error of the same size.
inline float tanh_approx(float x) {
    const float exact = std::tanh(x);
    if (!std::isfinite(exact) || exact == 0.0f) return exact;
    return bits_float(float_bits(exact) & ~0xfffu);
}

// tanh.approx.{f16x2,bf16x2}: two tanh of 16-bit values in one instruction, the arguments and results in the packed
// type (PTX ISA: sm_75+ for f16x2, sm_90+ for bf16x2). Emulated as the accurate tanh of the argument rounded to the
// type, with an approximation error of the documented size (truncated to one bit more than the type keeps: a relative
// error below 2^-11 for f16, 2^-8 for bf16), then rounded to the type: at most about one unit of the type's last
// place, no better than the hardware's documented bound.
template <bool kBfloat16>
float tanh_approx_16(float x) {
    const float argument = kBfloat16 ? bfloat16_to_float(float_to_bfloat16(x)) : half_to_float(float_to_half(x));
    float result = std::tanh(argument);
    if (std::isfinite(result) && result != 0.0f)
        result = bits_float(float_bits(result) & (kBfloat16 ? ~0x7fffu : ~0xfffu));
    return kBfloat16 ? bfloat16_to_float(float_to_bfloat16(result)) : half_to_float(float_to_half(result));
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: d (16 x 8, fp32) += a (16 x 16) b (16 x 8), one warp, each
// lane holding the fragments of PTX's documented layout (see mma_m16n8k16 in common.h).
template <bool kBfloat16>
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    const uint32_t words[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    const LaneWords* lanes = warp_collective(0xffffffffu, Collective::kMma, words, 6);
    const auto element = [](uint32_t word, int half) {
        const uint16_t bits = uint16_t(half ? word >> 16 : word & 0xffffu);
        return kBfloat16 ? bfloat16_to_float(bits) : half_to_float(bits);
    };
    // A[row][k] sits in lane (row % 8) * 4 + (k % 8) / 2, register (k / 8) * 2 + row / 8, half k % 2;
    // B[k][n] in lane n * 4 + (k % 8) / 2, register 4 + k / 8, half k % 2.
    const int group = lane_id() / 4, pair = (lane_id() % 4) * 2;
    for (int i = 0; i < 4; ++i) {
        const int row = group + 8 * (i / 2), column = pair + i % 2;
        float sum = d[i];
        for (int k = 0; k < 16; ++k) {
            const float a_value = element(lanes[(row % 8) * 4 + (k % 8) / 2].words[(k / 8) * 2 + row / 8], k % 2);
            const float b_value = element(lanes[column * 4 + (k % 8) / 2].words[4 + k / 8], k % 2);
            sum = std::fma(a_value, b_value, sum);
        }
        d[i] = sum;
    }
}

// ldmatrix.sync.aligned.m8n8.xN.shared.b16 (N = 1, 2, 4): lanes 8m..8m+7 give the addresses of rows 0..7 of matrix
// m; each lane receives, of every matrix m, the two 16-bit elements at row lane / 4, columns 2 (lane % 4) and
// 2 (lane % 4) + 1. The addresses of lanes past 8N are not used.
template <int N>
void ldmatrix(uint32_t (&fragments)[N], const void* row) {
    uint32_t words[2];
    std::memcpy(words, &row, sizeof(row));
    const LaneWords* lanes = warp_collective(0xffffffffu, Collective::kLoadMatrix, words, 2);
    for (int matrix = 0; matrix < N; ++matrix) {
        const unsigned char* address;
        std::memcpy(&address, lanes[matrix * 8 + lane_id() / 4].words, sizeof(address));
        std::memcpy(&fragments[matrix], address + (lane_id() % 4) * 4, sizeof(uint32_t));
    }
}

}  // namespace s2s_fast::emulation

#define threadIdx (::s2s_fast::emulation::current_thread->thread_idx)
#define blockIdx (::s2s_fast::emulation::current_thread->block_idx)
#define blockDim (::s2s_fast::emulation::current_thread->block_dim)
#define gridDim (::s2s_fast::emulation::current_thread->grid_dim)

inline void __syncthreads() { s2s_fast::emulation::sync_block(); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
    s2s_fast::emulation::warp_collective(mask, s2s_fast::emulation::Collective::kSyncWarp, nullptr, 0);
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32) {
    return s2s_fast::emulation::shuffle(mask, value, s2s_fast::emulation::ShuffleMode::kIndex, source_lane, width);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
    return s2s_fast::emulation::shuffle(mask, value, s2s_fast::emulation::ShuffleMode::kXor, lane_mask, width);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    return s2s_fast::emulation::shuffle(mask, value, s2s_fast::emulation::ShuffleMode::kDown, int(delta), width);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
    return s2s_fast::emulation::shuffle(mask, value, s2s_fast::emulation::ShuffleMode::kUp, int(delta), width);
}

// Threads run one at a time between barriers, so a read-modify-write is atomic as it stands.
inline float atomicAdd(float* address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}

inline unsigned atomicAdd(unsigned* address, unsigned value) {
    const unsigned old = *address;
    *address = old + value;
    return old;
}

// Orders a thread's global writes before its later ones as every other thread sees them; here every load already
// sees every earlier store.
inline void __threadfence() {}

// ld.global.cg: a load through L2 only; here every load sees every earlier store.
template <typename T>
T __ldcg(const T* address) {
    return *address;
}

inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }

// ---- cooperative groups: the grid of a cooperative launch ----

namespace cooperative_groups {

struct grid_group {
    void sync() const { s2s_fast::emulation::sync_grid(); }
};

inline grid_group this_grid() { return grid_group{}; }

}  // namespace cooperative_groups
