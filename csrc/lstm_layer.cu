// Persistent LSTM layer kernels (forward and backward), one cooperative launch per layer direction. See
// lstm_layer.h for the decomposition and the served sizes.
#include <cooperative_groups.h>

#include <cstdint>
#include <type_traits>

#include "common.h"
#include "lstm_layer.h"
#include "lstm_math.h"

namespace s2s_fast {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// Batch rows of one warp product: the n of mma.m16n8k16, and with 4 rows the 32 sums of one transpose-sum.
constexpr int kBatchTile = 8;
// Rows and reduction depth of one tensor-core product (mma.m16n8k16).
constexpr int kMmaRows = 16;
constexpr int kMmaDepth = 16;

// Shared-memory layout of one block; the plan (host) and the kernels (device) compute it with this one function.
// rows_s [rows, stride] T holds the block's rows of W_hh (forward) or its columns (backward), vector_s [batch_pad,
// stride] T the step's broadcast vector, partial_s [warps_per_item, rows, batch_pad] fp32 the products.
struct Layout {
    int rows;            // held rows (a multiple of 4, or of 8 for tensor cores), zero past the block's real ones
    int64_t length;      // reduction length held per row, zero past the real one
    int64_t stride;      // elements between rows in shared memory
    int batch_pad;       // batch rows of the vector, zero past B
    int rows_per_item;   // rows of one warp product: 4 (float32, CUDA cores) or 16 (float16/bfloat16, tensor cores)
    int items;           // warp products per step
    int warps_per_item;  // warps splitting the reduction of one product
    int64_t shared_bytes;
};

__host__ __device__ inline Layout layout_for(int element_size, int64_t units, int64_t batch, int64_t hidden,
                                             bool backward) {
    Layout layout{};
    const bool tensor_cores = element_size == 2;
    layout.rows_per_item = tensor_cores ? kMmaRows : 4;
    // An mma tile whose upper 8 rows lie past the held rows takes zeros for them instead of shared memory.
    layout.rows = int(round_up(backward ? units : 4 * units, tensor_cores ? kMmaRows / 2 : 4));
    layout.length = round_up(backward ? 4 * hidden : hidden, tensor_cores ? kMmaDepth : 16 / element_size);
    // 16 bytes of padding per row put the 8 rows of an mma fragment load in distinct banks.
    layout.stride = tensor_cores ? layout.length + 8 : layout.length;
    layout.batch_pad = int(round_up(batch, kBatchTile));
    layout.items = int(ceil_div(layout.rows, layout.rows_per_item)) * (layout.batch_pad / kBatchTile);
    layout.warps_per_item = 1;
    while (2 * layout.warps_per_item * layout.items <= kWarps) layout.warps_per_item *= 2;
    layout.shared_bytes = (layout.rows + layout.batch_pad) * layout.stride * element_size +
                          int64_t(layout.warps_per_item) * layout.rows * layout.batch_pad * 4;
    return layout;
}

// CUDA cores: a warp takes 4 rows x 8 batch rows and one of warps_per_item slices of the reduction; lanes take
// 16-byte chunks; one transpose-sum reduces the 32 partial sums (lane = row * 8 + batch row).
template <typename T>
__device__ void rows_times_vectors_fma(const T* rows_s, const T* vector_s, float* partial_s, const Layout& layout,
                                       int item, int slice, int lane) {
    constexpr int V = kVec16<T>;
    const int batch_tiles = layout.batch_pad / kBatchTile;
    const int quad = item / batch_tiles, tile = item % batch_tiles;
    const int64_t stride = layout.stride;
    const T* p_rows = rows_s + int64_t(quad) * 4 * stride;
    const T* p_vectors = vector_s + int64_t(tile) * kBatchTile * stride;
    float acc[4 * kBatchTile];  // [row in quad, batch row in tile]
#pragma unroll
    for (int i = 0; i < 4 * kBatchTile; ++i) acc[i] = 0.0f;
    const int64_t chunks = layout.length / V;
    for (int64_t c = int64_t(slice) * kWarpSize + lane; c < chunks; c += int64_t(kWarpSize) * layout.warps_per_item) {
        float b_rows[4][V];
#pragma unroll
        for (int r = 0; r < 4; ++r) load_floats<T, V>(p_rows + r * stride + c * V, b_rows[r]);
#pragma unroll
        for (int i = 0; i < kBatchTile; ++i) {
            float b_vector[V];
            load_floats<T, V>(p_vectors + i * stride + c * V, b_vector);
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int e = 0; e < V; ++e)
                    acc[r * kBatchTile + i] = fmaf(b_rows[r][e], b_vector[e], acc[r * kBatchTile + i]);
        }
    }
    const float sum = warp_transpose_sum(acc);
    const int r = lane / kBatchTile, i = lane % kBatchTile;
    partial_s[(int64_t(slice) * layout.rows + quad * 4 + r) * layout.batch_pad + tile * kBatchTile + i] = sum;
}

__device__ __forceinline__ uint32_t shared_word(const void* ptr) { return *reinterpret_cast<const uint32_t*>(ptr); }

// Tensor cores: a warp takes 16 rows x 8 batch rows and one of warps_per_item slices of the 16-deep steps, with the
// fragments of mma_m16n8k16 (common.h): b's columns are batch rows.
template <typename T>
__device__ void rows_times_vectors_mma(const T* rows_s, const T* vector_s, float* partial_s, const Layout& layout,
                                       int item, int slice, int lane) {
    const int batch_tiles = layout.batch_pad / kBatchTile;
    const int block = item / batch_tiles, tile = item % batch_tiles;
    const int group = lane / 4, pair = (lane % 4) * 2;
    const int64_t stride = layout.stride;
    const T* p_a = rows_s + (int64_t(block) * kMmaRows + group) * stride + pair;
    const T* p_b = vector_s + (int64_t(tile) * kBatchTile + group) * stride + pair;
    // Uniform over the warp: whether this tile's rows 8..15 are held rows.
    const bool upper = block * kMmaRows + kMmaRows / 2 < layout.rows;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const int64_t steps = layout.length / kMmaDepth;
    for (int64_t step = slice; step < steps; step += layout.warps_per_item) {
        const int64_t k = step * kMmaDepth;
        const uint32_t a[4] = {shared_word(p_a + k), upper ? shared_word(p_a + 8 * stride + k) : 0u,
                               shared_word(p_a + k + 8), upper ? shared_word(p_a + 8 * stride + k + 8) : 0u};
        const uint32_t b[2] = {shared_word(p_b + k), shared_word(p_b + k + 8)};
        mma_m16n8k16<T>(acc, a, b);
    }
    float* p_out = partial_s + (int64_t(slice) * layout.rows + block * kMmaRows + group) * layout.batch_pad +
                   tile * kBatchTile + pair;
    p_out[0] = acc[0];
    p_out[1] = acc[1];
    if (upper) {
        p_out[8 * layout.batch_pad] = acc[2];
        p_out[8 * layout.batch_pad + 1] = acc[3];
    }
}

// partial_s[slice, row, b] = rows_s[row, this slice of the reduction] . vector_s[b, the same slice].
template <typename T>
__device__ void rows_times_vectors(const T* rows_s, const T* vector_s, float* partial_s, const Layout& layout) {
    const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
    const int rounds = int(ceil_div(int64_t(layout.items) * layout.warps_per_item, kWarps));
    for (int round = 0; round < rounds; ++round) {
        const int work = round * kWarps + warp;
        const int item = work / layout.warps_per_item, slice = work % layout.warps_per_item;
        if (item >= layout.items) continue;
        if constexpr (sizeof(T) == 2) {
            rows_times_vectors_mma<T>(rows_s, vector_s, partial_s, layout, item, slice, lane);
        } else {
            rows_times_vectors_fma<T>(rows_s, vector_s, partial_s, layout, item, slice, lane);
        }
    }
}

// Copies rows [batch, source_length] of T written by other blocks during this launch (read through L2) into rows of
// `stride` elements in shared memory.
template <typename T>
__device__ __forceinline__ void copy_rows_to_shared(const T* source, int64_t source_length, T* target, int64_t stride,
                                                    int64_t batch) {
    constexpr int V = kVec16<T>;
    const int64_t vectors_per_row = source_length / V;
    for (int64_t index = threadIdx.x; index < batch * vectors_per_row; index += kThreads) {
        const int64_t b = index / vectors_per_row, v = index % vectors_per_row;
        *reinterpret_cast<Pack<T, V>*>(target + b * stride + v * V) =
            load_pack_l2<T, V>(source + b * source_length + v * V);
    }
}

// Zeroes `count` elements of shared memory (the padding the copies never write).
template <typename T>
__device__ __forceinline__ void zero_shared(T* target, int64_t count) {
    for (int64_t index = threadIdx.x; index < count; index += kThreads) target[index] = from_float<T>(0.0f);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_layer_fwd_kernel(const LstmLayerForwardParams params, const LstmLayerPlan plan) {
    unsigned char* smem_raw = dynamic_shared<unsigned char>();
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const Layout layout = layout_for(sizeof(T), units, batch, hidden, false);
    const int64_t stride = layout.stride;
    const int64_t state_length = lstm_layer_padded(hidden, sizeof(T));  // row length of the global h buffers
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem_raw);   // row u * 4 + gate = W_hh[gate * H + first_unit + u]
    T* vector_s = rows_s + layout.rows * stride;  // h_{t-1}
    float* partial_s = reinterpret_cast<float*>(vector_s + layout.batch_pad * stride);

    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < layout.rows * layout.length; index += kThreads) {
        const int64_t row = index / layout.length, k = index % layout.length;
        const int64_t unit = first_unit + row / 4, gate = row % 4;
        const bool present = row < 4 * units && unit < hidden && k < hidden;
        rows_s[row * stride + k] = present ? weight_hh[(gate * hidden + unit) * hidden + k] : from_float<T>(0.0f);
    }
    // The copies below fill only the first state_length elements of the first B rows.
    zero_shared(vector_s, layout.batch_pad * stride);

    // Thread (unit, batch row) of this block keeps that unit's cell state in a register for all steps.
    const int unit_in_block = threadIdx.x % units;
    const int64_t b = threadIdx.x / units;
    const int64_t unit = first_unit + unit_in_block;
    const bool owns = b < batch && unit < hidden;
    T* state_buffer = static_cast<T*>(params.state_buffer);
    float bias[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int64_t row_length = steps;
    float cell = 0.0f, hidden_state = 0.0f;
    if (owns) {
#pragma unroll
        for (int gate = 0; gate < 4; ++gate) {
            if (params.bias_ih != nullptr)
                bias[gate] += to_float(static_cast<const T*>(params.bias_ih)[gate * hidden + unit]);
            if (params.bias_hh != nullptr)
                bias[gate] += to_float(static_cast<const T*>(params.bias_hh)[gate * hidden + unit]);
        }
        if (params.lengths != nullptr) row_length = params.lengths[b];
        cell = to_float(static_cast<const T*>(params.cx)[b * hidden + unit]);
        const T hx = static_cast<const T*>(params.hx)[b * hidden + unit];
        hidden_state = to_float(hx);
        state_buffer[b * state_length + unit] = hx;
    }
    const bool saving = params.activations != nullptr;
    const T* __restrict__ input_gates = static_cast<const T*>(params.input_gates);
    T* output = static_cast<T*>(params.output);
    grid.sync();

    for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = params.reverse ? steps - 1 - s : s;
        const T* read_buffer = state_buffer + (s & 1) * batch * state_length;
        T* write_buffer = state_buffer + ((s + 1) & 1) * batch * state_length;
        const bool valid = owns && t < row_length;
        // Issued before the product so that their latency overlaps it.
        float pre[4];
#pragma unroll
        for (int gate = 0; gate < 4; ++gate)
            pre[gate] =
                valid ? to_float(input_gates[(t * batch + b) * 4 * hidden + gate * hidden + unit]) + bias[gate] : 0.0f;
        copy_rows_to_shared<T>(read_buffer, state_length, vector_s, stride, batch);
        __syncthreads();
        rows_times_vectors<T>(rows_s, vector_s, partial_s, layout);
        __syncthreads();
        if (owns) {
            const int64_t index = (t * batch + b) * hidden + unit;
            const T previous = vector_s[b * stride + unit];
            if (saving) static_cast<T*>(params.hidden_prev)[index] = previous;
            float* p_act = saving ? params.activations + (t * batch + b) * 4 * hidden + unit : nullptr;
            if (valid) {
#pragma unroll
                for (int gate = 0; gate < 4; ++gate)
                    for (int slice = 0; slice < layout.warps_per_item; ++slice)
                        pre[gate] +=
                            partial_s[(int64_t(slice) * layout.rows + unit_in_block * 4 + gate) * layout.batch_pad + b];
                const LstmActivations act = lstm_activate(pre[0], pre[1], pre[2], pre[3]);
                cell = lstm_next_cell(act, cell);
                const T h = from_float<T>(act.out_gate * tanhf(cell));
                hidden_state = to_float(h);
                output[index] = h;
                write_buffer[b * state_length + unit] = h;
                if (saving) {
                    p_act[0] = act.in_gate;
                    p_act[hidden] = act.forget_gate;
                    p_act[2 * hidden] = act.cell_gate;
                    p_act[3 * hidden] = act.out_gate;
                }
            } else {
                output[index] = from_float<T>(0.0f);
                write_buffer[b * state_length + unit] = previous;
                // Skipped steps save zeros: the backward never reads them, but the saved tensor is fully defined.
                if (saving) p_act[0] = p_act[hidden] = p_act[2 * hidden] = p_act[3 * hidden] = 0.0f;
            }
            if (saving) params.cell_states[index] = cell;
        }
        grid.sync();
    }
    if (owns) {
        static_cast<T*>(params.hy)[b * hidden + unit] = from_float<T>(hidden_state);
        static_cast<T*>(params.cy)[b * hidden + unit] = from_float<T>(cell);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_layer_bwd_kernel(const LstmLayerBackwardParams params, const LstmLayerPlan plan) {
    unsigned char* smem_raw = dynamic_shared<unsigned char>();
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const Layout layout = layout_for(sizeof(T), units, batch, hidden, true);
    const int64_t stride = layout.stride;
    const int64_t gates = 4 * hidden;
    const int64_t gate_length = lstm_layer_padded(gates, sizeof(T));  // row length of the global gate gradients
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem_raw);   // row u = column first_unit + u of W_hh
    T* vector_s = rows_s + layout.rows * stride;  // gate gradients of the later step
    float* partial_s = reinterpret_cast<float*>(vector_s + layout.batch_pad * stride);

    // Consecutive threads read consecutive columns of one row of W_hh (coalesced); the transpose lands in shared.
    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < layout.rows * layout.length; index += kThreads) {
        const int64_t gate_row = index / layout.rows, row = index % layout.rows;
        const int64_t unit = first_unit + row;
        const bool present = row < units && unit < hidden && gate_row < gates;
        rows_s[row * stride + gate_row] = present ? weight_hh[gate_row * hidden + unit] : from_float<T>(0.0f);
    }
    zero_shared(vector_s, layout.batch_pad * stride);

    const int unit_in_block = threadIdx.x % units;
    const int64_t b = threadIdx.x / units;
    const int64_t unit = first_unit + unit_in_block;
    const bool owns = b < batch && unit < hidden;
    int64_t row_length = steps;
    // Gradients reaching the state after the step being processed: grad_h_pass goes straight to the earlier
    // state (set where a step was skipped), the W_hh product of the later step's gate gradients is added to it.
    float grad_h_pass = 0.0f, grad_c = 0.0f;
    if (owns) {
        if (params.lengths != nullptr) row_length = params.lengths[b];
        grad_h_pass = to_float(static_cast<const T*>(params.grad_hy)[b * hidden + unit]);
        grad_c = to_float(static_cast<const T*>(params.grad_cy)[b * hidden + unit]);
    }
    T* grad_gates = static_cast<T*>(params.grad_gates);
    const T* __restrict__ grad_output = static_cast<const T*>(params.grad_output);
    // Step index s runs from the last processed step back to 0; s = -1 only collects the gradient of hx.
    for (int64_t s = steps - 1; s >= -1; --s) {
        const int64_t t = s < 0 ? -1 : (params.reverse ? steps - 1 - s : s);
        const bool valid = owns && s >= 0 && t < row_length;
        LstmActivations act{0.0f, 0.0f, 0.0f, 0.0f};
        float cell_prev = 0.0f, grad_out = 0.0f;
        if (valid) {
            const float* p_act = params.activations + (t * batch + b) * 4 * hidden + unit;
            act = {p_act[0], p_act[hidden], p_act[2 * hidden], p_act[3 * hidden]};
            const int64_t t_prev = params.reverse ? t + 1 : t - 1;
            cell_prev = s == 0 ? to_float(static_cast<const T*>(params.cx)[b * hidden + unit])
                               : params.cell_states[(t_prev * batch + b) * hidden + unit];
            grad_out = to_float(grad_output[(t * batch + b) * hidden + unit]);
        }
        const bool has_later = s + 1 < steps;
        if (has_later) {
            const int64_t t_later = params.reverse ? steps - 2 - s : s + 1;
            copy_rows_to_shared<T>(grad_gates + t_later * batch * gate_length, gate_length, vector_s, stride, batch);
            __syncthreads();
            rows_times_vectors<T>(rows_s, vector_s, partial_s, layout);
            __syncthreads();
        }
        if (owns) {
            float grad_h = grad_h_pass;
            if (has_later)
                for (int slice = 0; slice < layout.warps_per_item; ++slice)
                    grad_h += partial_s[(int64_t(slice) * layout.rows + unit_in_block) * layout.batch_pad + b];
            if (s < 0) {
                static_cast<T*>(params.grad_hx)[b * hidden + unit] = from_float<T>(grad_h);
                static_cast<T*>(params.grad_cx)[b * hidden + unit] = from_float<T>(grad_c);
            } else if (valid) {
                const LstmGateGrads grads = lstm_backward(act, cell_prev, grad_h + grad_out, grad_c);
                T* p_grad = grad_gates + (t * batch + b) * gate_length + unit;
                p_grad[0] = from_float<T>(grads.in_gate);
                p_grad[hidden] = from_float<T>(grads.forget_gate);
                p_grad[2 * hidden] = from_float<T>(grads.cell_gate);
                p_grad[3 * hidden] = from_float<T>(grads.out_gate);
                grad_c = grads.cx;
                grad_h_pass = 0.0f;
            } else {
                grad_h_pass = grad_h;
            }
        }
        if (s >= 0) grid.sync();
    }
}

template <typename Kernel>
cudaError_t plan_for(Kernel kernel, int element_size, int64_t batch, int64_t hidden, bool backward,
                     LstmLayerPlan* plan) {
    *plan = LstmLayerPlan{};
    if (batch <= 0 || hidden <= 0) return cudaSuccess;
    DeviceLimits limits;
    cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    int device = 0, cooperative = 0;
    status = cudaGetDevice(&device);
    if (status != cudaSuccess) return status;
    status = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
    if (status != cudaSuccess || !cooperative) return status;
    const int64_t units = ceil_div(hidden, limits.multiprocessors);
    if (units * batch > kThreads) return cudaSuccess;
    const Layout layout = layout_for(element_size, units, batch, hidden, backward);
    if (layout.shared_bytes > limits.max_shared_per_block) return cudaSuccess;
    status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(layout.shared_bytes));
    if (status != cudaSuccess) return status;
    int resident = 0;
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, size_t(layout.shared_bytes));
    if (status != cudaSuccess) return status;
    const int64_t blocks = ceil_div(hidden, units);
    if (blocks > int64_t(resident) * limits.multiprocessors) return cudaSuccess;
    plan->units_per_block = int(units);
    plan->blocks = int(blocks);
    plan->shared_bytes = layout.shared_bytes;
    return cudaSuccess;
}

}  // namespace

template <typename T>
cudaError_t lstm_layer_plan(int64_t batch, int64_t hidden, bool backward, LstmLayerPlan* plan) {
    if (backward) return plan_for(lstm_layer_bwd_kernel<T>, sizeof(T), batch, hidden, true, plan);
    return plan_for(lstm_layer_fwd_kernel<T>, sizeof(T), batch, hidden, false, plan);
}

template <typename T>
cudaError_t lstm_layer_fwd(const LstmLayerForwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0 || params.steps == 0) return cudaSuccess;
    LstmLayerPlan plan;
    const cudaError_t status = lstm_layer_plan<T>(params.batch, params.hidden, false, &plan);
    if (status != cudaSuccess) return status;
    if (plan.blocks == 0) return cudaErrorInvalidConfiguration;
    return launch_cooperative_kernel(lstm_layer_fwd_kernel<T>, dim3(plan.blocks), dim3(kThreads),
                                     size_t(plan.shared_bytes), stream, params, plan);
}

template <typename T>
cudaError_t lstm_layer_bwd(const LstmLayerBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0 || params.steps == 0) return cudaSuccess;
    LstmLayerPlan plan;
    const cudaError_t status = lstm_layer_plan<T>(params.batch, params.hidden, true, &plan);
    if (status != cudaSuccess) return status;
    if (plan.blocks == 0) return cudaErrorInvalidConfiguration;
    return launch_cooperative_kernel(lstm_layer_bwd_kernel<T>, dim3(plan.blocks), dim3(kThreads),
                                     size_t(plan.shared_bytes), stream, params, plan);
}

#define S2S_FAST_INSTANTIATE_LSTM_LAYER(T)                                               \
    template cudaError_t lstm_layer_plan<T>(int64_t, int64_t, bool, LstmLayerPlan*);     \
    template cudaError_t lstm_layer_fwd<T>(const LstmLayerForwardParams&, cudaStream_t); \
    template cudaError_t lstm_layer_bwd<T>(const LstmLayerBackwardParams&, cudaStream_t);

S2S_FAST_INSTANTIATE_LSTM_LAYER(float)
S2S_FAST_INSTANTIATE_LSTM_LAYER(__half)
S2S_FAST_INSTANTIATE_LSTM_LAYER(__nv_bfloat16)

}  // namespace s2s_fast
