// Device helpers shared by the kernels: dtype conversion, 16-byte packs, special functions, warp reductions, and the
// few hardware-specific pieces (inline PTX, dynamic shared memory, launches) behind one wrapper each.
// Plain CUDA C++ (no torch headers), so every kernel file compiles on a machine without a CUDA build of torch; with
// csrc/emulation/include first on the include path the host compiler builds the same files for the CUDA emulation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "device_limits.h"

namespace s2s_fast {

// ---- hardware-specific pieces: PTX and CUDA launches on a GPU, csrc/emulation/cuda.h on the CPU ----
#if defined(S2S_FAST_CUDA_EMULATION)

inline float tanh_approx(float x) { return emulation::tanh_approx(x); }

template <typename T>
inline void tanh_approx_packed(float& x0, float& x1) {
    x0 = emulation::tanh_approx_16<std::is_same_v<T, __nv_bfloat16>>(x0);
    x1 = emulation::tanh_approx_16<std::is_same_v<T, __nv_bfloat16>>(x1);
}

template <typename T>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    emulation::mma_m16n8k16<std::is_same_v<T, __nv_bfloat16>>(d, a, b);
}

template <typename T>
inline T* dynamic_shared() {
    return reinterpret_cast<T*>(emulation::block_shared_memory());
}

template <int N>
inline void load_matrix(uint32_t (&fragments)[N], const void* row) {
    emulation::ldmatrix<N>(fragments, row);
}

inline void async_copy_16(void* shared, const void* global) { emulation::async_copy(shared, global, 16); }
inline void async_copy_commit() { emulation::async_commit(); }
template <int N>
inline void async_copy_wait() {
    emulation::async_wait(N);
}

template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t,
                          const Args&... args) {
    return emulation::launch(emulation::kernel_key(kernel), grid, block, shared_bytes, false, [&] { kernel(args...); });
}

template <typename... Params, typename... Args>
cudaError_t launch_cooperative_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                                      cudaStream_t, const Args&... args) {
    return emulation::launch(emulation::kernel_key(kernel), grid, block, shared_bytes, true, [&] { kernel(args...); });
}

#else

// tanh.approx.f32: relative error about 2^-11.
__device__ __forceinline__ float tanh_approx(float x) {
    float result;
    asm("tanh.approx.f32 %0, %1;" : "=f"(result) : "f"(x));
    return result;
}

// tanh.approx.f16x2 / tanh.approx.bf16x2 (T __half or __nv_bfloat16): both values rounded to T, two tanh in one
// instruction (PTX ISA: relative error about 2^-11 for f16, 2^-8 for bf16, results in T). bf16x2 needs sm_90; older
// targets take two tanh.approx.f32 of the rounded values, rounded back to bf16.
template <typename T>
__device__ __forceinline__ void tanh_approx_packed(float& x0, float& x1) {
    float2 result;
    if constexpr (std::is_same_v<T, __half>) {
        const __half2 pair = __floats2half2_rn(x0, x1);
        uint32_t out;
        asm("tanh.approx.f16x2 %0, %1;" : "=r"(out) : "r"(reinterpret_cast<const uint32_t&>(pair)));
        result = __half22float2(reinterpret_cast<const __half2&>(out));
    } else {
        const __nv_bfloat162 pair = __floats2bfloat162_rn(x0, x1);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        uint32_t out;
        asm("tanh.approx.bf16x2 %0, %1;" : "=r"(out) : "r"(reinterpret_cast<const uint32_t&>(pair)));
        result = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162&>(out));
#else
        const float2 rounded = __bfloat1622float2(pair);
        result = __bfloat1622float2(__floats2bfloat162_rn(tanh_approx(rounded.x), tanh_approx(rounded.y)));
#endif
    }
    x0 = result.x;
    x1 = result.y;
}

// d += a (16 x 16, row-major) x b (16 x 8, column-major), fp32 accumulators, one warp (mma.sync.m16n8k16, T half or
// bfloat16). Fragments (PTX ISA): lane = 4 * group + pair / 2 holds a rows group and group + 8 at columns pair,
// pair + 1 (and + 8), b at column group, depths pair, pair + 1 (and + 8), d rows group, group + 8 at columns pair,
// pair + 1.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    if constexpr (std::is_same_v<T, __half>) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
}

// The block's dynamic shared memory (the launch's shared_bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
    extern __shared__ __align__(16) unsigned char dynamic_shared_memory[];
    return reinterpret_cast<T*>(dynamic_shared_memory);
}

__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// ldmatrix.m8n8.xN (N = 1, 2, 4): lanes 8m..8m+7 give the shared addresses of rows 0..7 of 8 x 8 16-bit matrix m;
// each lane gets, of each matrix, the two elements at row lane / 4, columns 2 (lane % 4) and 2 (lane % 4) + 1 (the
// fragment layout of mma_m16n8k16's operands).
template <int N>
__device__ __forceinline__ void load_matrix(uint32_t (&fragments)[N], const void* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
    if constexpr (N == 4) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(fragments[0]), "=r"(fragments[1]), "=r"(fragments[2]), "=r"(fragments[3])
                     : "r"(shared_address(row)));
    } else if constexpr (N == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(fragments[0]), "=r"(fragments[1])
                     : "r"(shared_address(row)));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                     : "=r"(fragments[0])
                     : "r"(shared_address(row)));
    }
}

// cp.async.cg: 16 bytes from global (through L2 only: fit for data other blocks wrote during this launch) to shared,
// without passing through registers; it lands only once async_copy_wait lets its group complete.
__device__ __forceinline__ void async_copy_16(void* shared, const void* global) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared)), "l"(global));
}

// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void async_copy_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most the newest N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void async_copy_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          const Args&... args) {
    kernel<<<grid, block, shared_bytes, stream>>>(args...);
    return cudaGetLastError();
}

template <typename... Params, typename... Args>
cudaError_t launch_cooperative_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                                      cudaStream_t stream, const Args&... args) {
    static_assert((std::is_same_v<std::decay_t<Params>, Args> && ...), "arguments of the kernel's own types");
    void* pointers[] = {const_cast<void*>(static_cast<const void*>(&args))...};
    return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, pointers, shared_bytes,
                                       stream);
}

#endif

constexpr unsigned kFullWarpMask = 0xffffffffu;
constexpr int kWarpSize = 32;

template <typename T>
__device__ __forceinline__ float to_float(T value);
template <>
__device__ __forceinline__ float to_float<float>(float value) {
    return value;
}
template <>
__device__ __forceinline__ float to_float<__half>(__half value) {
    return __half2float(value);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 value) {
    return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T from_float(float value);
template <>
__device__ __forceinline__ float from_float<float>(float value) {
    return value;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float value) {
    return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float value) {
    return __float2bfloat16_rn(value);
}

// Elements of T in one 16-byte access.
template <typename T>
constexpr int kVec16 = 16 / static_cast<int>(sizeof(T));

// Evaluates the lambda __VA_ARGS__ with the constant VEC = kVec16<T> when `vectorized` holds, else VEC = 1 (as
// mamba's BOOL_SWITCH): the "16-byte accesses where sizes and alignment allow, scalar ones otherwise" launch.
#define S2S_FAST_VECTOR_SWITCH(vectorized, T, VEC, ...) \
    [&] {                                               \
        if (vectorized) {                               \
            constexpr int VEC = kVec16<T>;              \
            return __VA_ARGS__();                       \
        }                                               \
        constexpr int VEC = 1;                          \
        return __VA_ARGS__();                           \
    }()

// N elements of T moved as one access of N * sizeof(T) bytes (16 bytes for the vector paths).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T values[N];
};

// A GPU faults on a vector access that is not aligned to its size; the emulation (where x86 would not) says so.
template <typename T, int N>
__device__ __forceinline__ void check_pack_alignment(const void* ptr) {
#if defined(S2S_FAST_CUDA_EMULATION)
    if (reinterpret_cast<uintptr_t>(ptr) % alignof(Pack<T, N>) != 0)
        emulation::fail("a vector load or store at an address not aligned to its size (a fault on a GPU)");
#else
    (void)ptr;
#endif
}

template <typename T, int N>
__device__ __forceinline__ void load_floats(const T* ptr, float (&out)[N]) {
    check_pack_alignment<T, N>(ptr);
    const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(ptr);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_float(pack.values[i]);
}

// Same as load_floats but through L2 only (ld.global.cg): for data other blocks wrote during this launch.
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack_l2(const T* ptr) {
    static_assert(sizeof(Pack<T, N>) == 16 || sizeof(Pack<T, N>) == sizeof(T), "16-byte or scalar packs only");
    Pack<T, N> pack;
    if constexpr (sizeof(Pack<T, N>) == 16) {
        const int4 raw = __ldcg(reinterpret_cast<const int4*>(ptr));
        pack = *reinterpret_cast<const Pack<T, N>*>(&raw);
    } else {
        pack.values[0] = __ldcg(ptr);
    }
    return pack;
}

// N floats from shared memory, as 16-byte accesses when N is a multiple of 4 (ptr then 16-byte aligned).
template <int N>
__device__ __forceinline__ void load_shared_floats(const float* ptr, float (&out)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const float4 quad = *reinterpret_cast<const float4*>(ptr + i);
            out[i] = quad.x;
            out[i + 1] = quad.y;
            out[i + 2] = quad.z;
            out[i + 3] = quad.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; ++i) out[i] = ptr[i];
    }
}

template <typename T, int N>
__device__ __forceinline__ void store_floats(T* ptr, const float (&in)[N]) {
    check_pack_alignment<T, N>(ptr);
    Pack<T, N> pack;
#pragma unroll
    for (int i = 0; i < N; ++i) pack.values[i] = from_float<T>(in[i]);
    *reinterpret_cast<Pack<T, N>*>(ptr) = pack;
}

__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }

// tanh for a kernel computing in T: float keeps the accurate tanhf (a few ulp), half and bfloat16 use the hardware
// approximation (relative error about 2^-11), which lies below their own rounding error.
template <typename T>
__device__ __forceinline__ float tanh_for(float x) {
    if constexpr (sizeof(T) == 4) {
        return tanhf(x);
    } else {
        return tanh_approx(x);
    }
}

__device__ __forceinline__ float warp_sum(float value) {
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullWarpMask, value, offset);
    return value;
}

__device__ __forceinline__ float warp_max(float value) {
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
        value = fmaxf(value, __shfl_xor_sync(kFullWarpMask, value, offset));
    return value;
}

// Sum over groups of `group` consecutive lanes (a power of two up to 32); every lane of a group gets its sum.
__device__ __forceinline__ float group_sum(float value, int group) {
    for (int offset = group / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullWarpMask, value, offset);
    return value;
}

// One halving step of warp_transpose_sum; the offsets are template arguments so that every array index is a
// compile-time constant and the array stays in registers.
template <int OFFSET>
__device__ __forceinline__ void transpose_sum_step(float (&values)[32], int lane) {
    const bool upper = (lane & OFFSET) != 0;
#pragma unroll
    for (int i = 0; i < OFFSET; ++i) {
        const float send = upper ? values[i] : values[i + OFFSET];
        const float keep = upper ? values[i + OFFSET] : values[i];
        values[i] = keep + __shfl_xor_sync(kFullWarpMask, send, OFFSET);
    }
    if constexpr (OFFSET > 1) transpose_sum_step<OFFSET / 2>(values, lane);
}

// Reduces 32 per-lane partial values across the warp with 31 shuffles instead of 32 * 5: afterwards lane l holds
// the sum over all lanes of values[l] (recursive halving: each step keeps the half selected by one lane bit and
// adds the partner's copy of it).
__device__ __forceinline__ float warp_transpose_sum(float (&values)[32]) {
    transpose_sum_step<16>(values, int(threadIdx.x % kWarpSize));
    return values[0];
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

__host__ __device__ inline bool is_aligned(const void* ptr, int bytes) {
    return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace s2s_fast
