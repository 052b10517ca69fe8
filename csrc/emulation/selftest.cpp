// A program that checks the CUDA emulation itself and runs every kernel of csrc/ once on small sizes, built with
// AddressSanitizer and UndefinedBehaviorSanitizer by tests/test_cuda_emulation.py: out-of-bounds global and shared
// accesses are what compute-sanitizer would find on a GPU. Numerics are the Python tests' job (against the reference).
//
//   selftest semantics   the emulation's own promises: barriers block, a missing barrier shows, deadlocks and
//                        misuse are reported, launch limits hold, device queries answer as an H100/H200
//   selftest kernels     every kernel, forward and backward, each dtype, awkward sizes
//   selftest overflow    a deliberate one-element overflow of a global buffer (the sanitizer must stop it)
// Prints "selftest <mode>: passed" and exits 0, or says what failed and exits 1.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "additive_attention.h"
#include "common.h"
#include "gru_cell.h"
#include "lstm_cell.h"
#include "lstm_layer.h"

namespace s2s_fast {
namespace {

int failures = 0;

void expect(bool condition, const std::string& what) {
    if (!condition) {
        std::printf("FAILED: %s\n", what.c_str());
        ++failures;
    }
}

void expect_status(cudaError_t status, const std::string& what) {
    expect(status == cudaSuccess, what + ": " + cudaGetErrorString(status));
}

// ---- kernels for the semantics checks ----

// Each thread writes its index to shared memory, then (after the barrier, when `synchronise`) reads its neighbour's.
__global__ void neighbour_kernel(int* out, bool synchronise) {
    int* shared = dynamic_shared<int>();
    shared[threadIdx.x] = int(threadIdx.x);
    if (synchronise) __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = shared[(threadIdx.x + 1) % blockDim.x];
}

// Even threads wait at the block barrier, odd ones at a shuffle that needs the even lanes: neither can go on.
__global__ void deadlock_kernel(int* out) {
    if (threadIdx.x % 2 == 0) {
        __syncthreads();
    } else {
        out[threadIdx.x] = __shfl_sync(kFullWarpMask, 1, 0);
    }
}

__global__ void warp_sum_kernel(float* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = warp_sum(float(threadIdx.x));
}

// Lane 0 leaves before the shuffle that needs it.
__global__ void exited_lane_kernel(float* out) {
    if (threadIdx.x % kWarpSize == 0) return;
    out[threadIdx.x] = __shfl_xor_sync(kFullWarpMask, 1.0f, 1);
}

// Blocks write their index, meet at the grid barrier, then read the next block's.
__global__ void grid_kernel(int* slots, int* out) {
    if (threadIdx.x == 0) slots[blockIdx.x] = int(blockIdx.x);
    cooperative_groups::this_grid().sync();
    if (threadIdx.x == 0) out[blockIdx.x] = slots[(blockIdx.x + 1) % gridDim.x];
}

// Each thread copies 16 bytes into shared memory with cp.async, then reads them back with or without waiting.
__global__ void async_copy_kernel(const int4* in, int4* out, bool wait) {
    int4* shared = dynamic_shared<int4>();
    async_copy_16(shared + threadIdx.x, in + threadIdx.x);
    async_copy_commit();
    if (wait) async_copy_wait<0>();
    out[threadIdx.x] = shared[threadIdx.x];
}

__global__ void empty_kernel(int*) {}

void check_semantics() {
    // Device queries answer as the emulated GPU: 132 SMs and 227 KiB of opt-in shared memory on both.
    for (const char* gpu : {"h100", "h200"}) {
        setenv("S2S_FAST_CUDA_EMULATE", gpu, 1);
        DeviceLimits limits;
        expect_status(current_device_limits(&limits), "device limits");
        expect(limits.multiprocessors == 132 && limits.max_shared_per_block == 232448,
               std::string(gpu) + ": 132 SMs and 232448 bytes of opt-in shared memory per block");
    }
    setenv("S2S_FAST_CUDA_EMULATE", "h100", 1);

    // A barrier makes every write visible; without it, some orders read unwritten (0xff-filled) shared memory.
    constexpr int kThreads = 64, kBlocks = 3;
    std::vector<int> out(kThreads * kBlocks);
    expect_status(launch_kernel(neighbour_kernel, dim3(kBlocks), dim3(kThreads), kThreads * sizeof(int), nullptr,
                                out.data(), true),
                  "neighbour kernel");
    bool right = true;
    for (int i = 0; i < kThreads * kBlocks; ++i) right = right && out[i] == (i % kThreads + 1) % kThreads;
    expect(right, "with __syncthreads every thread reads its neighbour's index");
    bool some_order_breaks = false;
    for (int seed = 0; seed < 8 && !some_order_breaks; ++seed) {
        setenv("S2S_FAST_CUDA_EMULATE_SEED", std::to_string(seed).c_str(), 1);
        expect_status(launch_kernel(neighbour_kernel, dim3(kBlocks), dim3(kThreads), kThreads * sizeof(int), nullptr,
                                    out.data(), false),
                      "neighbour kernel without the barrier");
        for (int i = 0; i < kThreads * kBlocks; ++i) some_order_breaks |= out[i] != (i % kThreads + 1) % kThreads;
    }
    expect(some_order_breaks, "without __syncthreads some thread order reads unwritten shared memory");

    const cudaError_t deadlock = launch_kernel(deadlock_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
    expect(deadlock == cudaErrorLaunchFailure && std::strstr(cudaGetErrorString(deadlock), "deadlock") != nullptr,
           "a barrier half the block never reaches is reported as a deadlock");

    std::vector<float> sums(128);
    expect_status(launch_kernel(warp_sum_kernel, dim3(2), dim3(64), 0, nullptr, sums.data()), "warp sum");
    expect(sums[0] == 496.0f && sums[63] == 1520.0f && sums[64] == 496.0f, "warp_sum adds the lanes of each warp");

    const cudaError_t exited = launch_kernel(exited_lane_kernel, dim3(1), dim3(32), 0, nullptr, sums.data());
    expect(exited == cudaErrorLaunchFailure && std::strstr(cudaGetErrorString(exited), "exited") != nullptr,
           "a shuffle whose mask names an exited lane is reported");

    std::vector<int> slots(8), neighbours(8);
    expect_status(launch_cooperative_kernel(grid_kernel, dim3(8), dim3(32), 0, nullptr, slots.data(),
                                            neighbours.data()),
                  "cooperative grid kernel");
    right = true;
    for (int b = 0; b < 8; ++b) right = right && neighbours[b] == (b + 1) % 8;
    expect(right, "grid.sync() orders the blocks' writes before the reads");
    expect(launch_kernel(grid_kernel, dim3(2), dim3(32), 0, nullptr, slots.data(), neighbours.data()) ==
               cudaErrorLaunchFailure,
           "grid.sync() outside a cooperative launch is reported");
    expect(launch_cooperative_kernel(grid_kernel, dim3(132 * 64 + 1), dim3(32), 0, nullptr, slots.data(),
                                     neighbours.data()) == cudaErrorCooperativeLaunchTooLarge,
           "a cooperative grid larger than the GPU holds is refused");

    std::vector<int4> source(32, int4{1, 2, 3, 4}), copied(32);
    expect_status(launch_kernel(async_copy_kernel, dim3(1), dim3(32), 32 * sizeof(int4), nullptr, source.data(),
                                copied.data(), true),
                  "cp.async with a wait");
    expect(copied[31].w == 4, "a cp.async copy has landed after async_copy_wait");
    expect_status(launch_kernel(async_copy_kernel, dim3(1), dim3(32), 32 * sizeof(int4), nullptr, source.data(),
                                copied.data(), false),
                  "cp.async without a wait");
    expect(copied[0].x == -1, "without async_copy_wait the copy has not landed (the 0xff fill is read)");

    expect(launch_kernel(empty_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, out.data()) == cudaErrorInvalidValue,
           "more than 48 KiB of dynamic shared memory without the opt-in attribute is refused");
    expect_status(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
                  "opt-in attribute");
    expect_status(launch_kernel(empty_kernel, dim3(1), dim3(32), 64 * 1024, nullptr, out.data()),
                  "64 KiB after opting in");
    expect(cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 232448 + 1) ==
               cudaErrorInvalidValue,
           "an opt-in past the GPU's maximum is refused");
    expect(launch_kernel(empty_kernel, dim3(1), dim3(1025), 0, nullptr, out.data()) == cudaErrorInvalidConfiguration,
           "a block of 1025 threads is refused");
    int blocks = 0;
    expect_status(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, empty_kernel, 256, 232448), "occupancy");
    expect(blocks == 1, "one block per SM when it takes all the opt-in shared memory");
}

// ---- every kernel once, on buffers of exactly the sizes the contracts state ----

std::mt19937 generator(7);

template <typename T>
std::vector<T> random_buffer(size_t count, float scale = 1.0f) {
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<T> buffer(count);
    for (T& value : buffer) value = from_float<T>(normal(generator));
    return buffer;
}

template <typename T>
void run_cells(int64_t batch, int64_t input_size, int64_t hidden) {
    auto input = random_buffer<T>(batch * input_size), hx = random_buffer<T>(batch * hidden);
    auto cx = random_buffer<T>(batch * hidden), weight_ih = random_buffer<T>(4 * hidden * input_size, 0.2f);
    auto weight_hh = random_buffer<T>(4 * hidden * hidden, 0.2f), bias = random_buffer<T>(4 * hidden);
    auto gates = random_buffer<T>(batch * 4 * hidden);
    std::vector<T> hy(batch * hidden), cy(batch * hidden), grad_gates(batch * 4 * hidden), grad_cx(batch * hidden);
    std::vector<float> activations(batch * 4 * hidden);

    LstmCellPointwiseParams pointwise{batch, hidden, gates.data(), 4 * hidden, bias.data(), nullptr, cx.data(),
                                      hidden, hy.data(), cy.data(), activations.data()};
    expect_status(lstm_cell_pointwise_fwd<T>(pointwise, nullptr), "lstm_cell_pointwise_fwd");
    if (batch <= kLstmCellFusedMaxBatch) {
        LstmCellFusedParams fused{batch, input_size, hidden, input.data(), input_size, hx.data(), hidden, cx.data(),
                                  hidden, weight_ih.data(), input_size, weight_hh.data(), hidden, bias.data(),
                                  bias.data(), hy.data(), cy.data(), activations.data()};
        expect_status(lstm_cell_fused_fwd<T>(fused, nullptr), "lstm_cell_fused_fwd");
    }
    LstmCellBackwardParams backward{batch, hidden, hy.data(), hidden, cy.data(), hidden, cx.data(), hidden,
                                    activations.data(), grad_gates.data(), grad_cx.data()};
    expect_status(lstm_cell_bwd<T>(backward, nullptr), "lstm_cell_bwd");

    std::vector<T> grad_input_gates(batch * 3 * hidden), grad_hidden_gates(batch * 3 * hidden);
    GruCellForwardParams gru{batch, hidden, gates.data(), 3 * hidden, gates.data() + 3 * hidden * 0, 3 * hidden,
                             bias.data(), bias.data(), hx.data(), hidden, hy.data(), activations.data()};
    expect_status(gru_cell_fwd<T>(gru, nullptr), "gru_cell_fwd");
    GruCellBackwardParams gru_backward{batch, hidden, hy.data(), hidden, hx.data(), hidden, activations.data(),
                                       grad_input_gates.data(), grad_hidden_gates.data(), grad_cx.data()};
    expect_status(gru_cell_bwd<T>(gru_backward, nullptr), "gru_cell_bwd");
}

template <typename T>
void run_attention(int64_t batch, int64_t queries, int64_t keys, int64_t attn, int64_t value_size) {
    auto query = random_buffer<T>(batch * queries * attn), key = random_buffer<T>(batch * keys * attn);
    auto v = random_buffer<T>(attn), values = random_buffer<T>(batch * keys * value_size);
    std::vector<char> mask_bytes(batch * keys);
    for (int64_t i = 0; i < batch * keys; ++i) mask_bytes[i] = (i % keys) % 3 != 1 && i / keys != 1;  // row 1 empty
    const bool* mask = reinterpret_cast<const bool*>(mask_bytes.data());
    std::vector<T> context(batch * queries * value_size), weights(batch * queries * keys);
    std::vector<float> probs(batch * queries * keys);
    AdditiveAttentionForwardParams forward{batch, queries, keys, attn, value_size, query.data(), key.data(),
                                           v.data(), values.data(), mask, context.data(), weights.data(),
                                           probs.data(), true};
    expect_status(additive_attention_fwd<T>(forward, nullptr), "additive_attention_fwd");

    auto grad_context = random_buffer<T>(batch * queries * value_size);
    auto grad_weights = random_buffer<T>(batch * queries * keys);
    std::vector<T> grad_query(batch * queries * attn), grad_key(batch * keys * attn), grad_v(attn);
    std::vector<T> grad_values(batch * keys * value_size);
    for (const bool deterministic : {false, true}) {
        std::vector<float> workspace(additive_attention_bwd_workspace(batch, queries, keys, attn, deterministic));
        // The workspace's parts are set by additive_attention_bwd_layout.
        AdditiveAttentionBackwardParams backward{batch, queries, keys, attn, value_size, query.data(), key.data(),
                                                 v.data(), values.data(), mask, probs.data(), grad_context.data(),
                                                 grad_weights.data(), grad_query.data(), grad_key.data(),
                                                 grad_v.data(), grad_values.data(), nullptr, nullptr, 0, nullptr,
                                                 nullptr, true};
        additive_attention_bwd_layout(backward, workspace.data(), deterministic);
        expect_status(additive_attention_bwd_scores<T>(backward, nullptr), "additive_attention_bwd_scores");
        expect_status(additive_attention_bwd_inputs<T>(backward, nullptr), "additive_attention_bwd_inputs");
    }
}

template <typename T>
void run_layer(int64_t steps, int64_t batch, int64_t hidden) {
    const int64_t state_length = lstm_layer_padded(hidden, sizeof(T));
    const int64_t gate_length = lstm_layer_padded(4 * hidden, sizeof(T));
    auto input_gates = random_buffer<T>(steps * batch * 4 * hidden), weight_hh = random_buffer<T>(4 * hidden * hidden);
    auto bias = random_buffer<T>(4 * hidden), hx = random_buffer<T>(batch * hidden);
    auto cx = random_buffer<T>(batch * hidden);
    std::vector<int64_t> lengths(batch);
    for (int64_t b = 0; b < batch; ++b) lengths[b] = (steps * (b + 1)) / batch;  // row 0 may be empty
    std::vector<T> output(steps * batch * hidden), hy(batch * hidden), cy(batch * hidden);
    std::vector<T> state_buffer(2 * batch * state_length, from_float<T>(0.0f)), hidden_prev(steps * batch * hidden);
    std::vector<float> activations(steps * batch * 4 * hidden), cell_states(steps * batch * hidden);
    for (const bool reverse : {false, true}) {
        LstmLayerForwardParams forward{steps, batch, hidden, reverse, input_gates.data(), weight_hh.data(),
                                       bias.data(), bias.data(), lengths.data(), hx.data(), cx.data(), output.data(),
                                       hy.data(), cy.data(), state_buffer.data(), activations.data(),
                                       cell_states.data(), hidden_prev.data()};
        expect_status(lstm_layer_fwd<T>(forward, nullptr), "lstm_layer_fwd");
        std::vector<T> grad_gates(steps * batch * gate_length, from_float<T>(0.0f)), grad_hx(batch * hidden);
        std::vector<T> grad_cx(batch * hidden);
        LstmLayerBackwardParams backward{steps, batch, hidden, reverse, weight_hh.data(), lengths.data(),
                                         cx.data(), activations.data(), cell_states.data(), output.data(),
                                         hy.data(), cy.data(), grad_gates.data(), grad_hx.data(), grad_cx.data()};
        expect_status(lstm_layer_bwd<T>(backward, nullptr), "lstm_layer_bwd");
    }
}

template <typename T>
void run_kernels() {
    run_cells<T>(3, 5, 7);
    run_cells<T>(8, 16, 24);
    run_cells<T>(11, 8, 32);
    run_attention<T>(3, 5, 37, 13, 17);
    run_attention<T>(2, 3, 9, 64, 32);
    run_layer<T>(3, 3, 20);
    run_layer<T>(2, 9, 300);
}

void overflow() {
    // The attention forward reads values[B, Tk, Dv]; hand it one element less.
    auto query = random_buffer<float>(1 * 1 * 4), key = random_buffer<float>(1 * 3 * 4), v = random_buffer<float>(4);
    float* values = static_cast<float*>(std::malloc(sizeof(float) * (3 * 5 - 1)));
    for (int i = 0; i < 3 * 5 - 1; ++i) values[i] = 1.0f;
    std::vector<float> context(5), weights(3), probs(3);
    AdditiveAttentionForwardParams forward{1, 1, 3, 4, 5, query.data(), key.data(), v.data(), values, nullptr,
                                           context.data(), weights.data(), probs.data(), false};
    expect_status(additive_attention_fwd<float>(forward, nullptr), "additive_attention_fwd");
    std::free(values);
}

}  // namespace
}  // namespace s2s_fast

int main(int argc, char** argv) {
    using namespace s2s_fast;
    const std::string mode = argc > 1 ? argv[1] : "";
    setenv("S2S_FAST_CUDA_EMULATE", "h100", 1);
    if (mode == "semantics") {
        check_semantics();
    } else if (mode == "kernels") {
        run_kernels<float>();
        run_kernels<__half>();
        run_kernels<__nv_bfloat16>();
    } else if (mode == "overflow") {
        overflow();
    } else {
        std::printf("usage: selftest semantics | kernels | overflow\n");
        return 2;
    }
    if (failures > 0) {
        std::printf("selftest %s: %d check(s) failed\n", mode.c_str(), failures);
        return 1;
    }
    std::printf("selftest %s: passed\n", mode.c_str());
    return 0;
}
