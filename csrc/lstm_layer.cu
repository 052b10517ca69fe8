// Persistent LSTM layer kernels (forward and backward), one cooperative launch per layer direction. See
// lstm_layer.h for the decomposition and the served sizes.
#include <cooperative_groups.h>

#include "common.h"
#include "lstm_layer.h"
#include "lstm_math.h"

namespace s2s_fast {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// Batch rows per warp product: with 4 rows of W that makes the 32 partial sums one transpose-sum reduces.
constexpr int kBatchTile = 8;

__host__ __device__ inline int64_t batch_padded(int64_t batch) { return round_up(batch, kBatchTile); }

// Shared memory: rows_s [rows, length] T, vector_s [batch_pad, length] T, partial_s [warps_per_item, rows,
// batch_pad] fp32.
__host__ __device__ inline int64_t shared_bytes_for(int rows, int64_t length, int64_t batch, int warps_per_item,
                                                    int element_size) {
    const int64_t batch_pad = batch_padded(batch);
    return (rows + batch_pad) * length * element_size + int64_t(warps_per_item) * rows * batch_pad * 4;
}

// partial_s[slice, row, b] = rows_s[row, chunks of this slice] . vector_s[b, same chunks]. A warp takes one item
// (4 consecutive rows x 8 batch rows) and one of warps_per_item slices of the row; lanes take 16-byte chunks.
template <typename T>
__device__ void rows_times_vectors(const T* rows_s, const T* vector_s, float* partial_s, int rows, int64_t length,
                                   int batch_pad, int warps_per_item, int warp, int lane) {
    constexpr int V = kVec16<T>;
    const int batch_tiles = batch_pad / kBatchTile;
    const int items = rows / 4 * batch_tiles;
    const int64_t chunks = length / V;
    const int rounds = int(ceil_div(int64_t(items) * warps_per_item, kWarps));
    for (int round = 0; round < rounds; ++round) {
        const int work = round * kWarps + warp;
        const int item = work / warps_per_item, slice = work % warps_per_item;
        if (item >= items) continue;
        const int quad = item / batch_tiles, tile = item % batch_tiles;
        const T* p_rows = rows_s + int64_t(quad) * 4 * length;
        const T* p_vectors = vector_s + int64_t(tile) * kBatchTile * length;
        float acc[4 * kBatchTile];  // [row in quad, batch row in tile]
#pragma unroll
        for (int i = 0; i < 4 * kBatchTile; ++i) acc[i] = 0.0f;
        for (int64_t c = int64_t(slice) * kWarpSize + lane; c < chunks; c += int64_t(kWarpSize) * warps_per_item) {
            float b_rows[4][V];
#pragma unroll
            for (int r = 0; r < 4; ++r) load_floats<T, V>(p_rows + r * length + c * V, b_rows[r]);
#pragma unroll
            for (int i = 0; i < kBatchTile; ++i) {
                float b_vector[V];
                load_floats<T, V>(p_vectors + i * length + c * V, b_vector);
#pragma unroll
                for (int r = 0; r < 4; ++r)
#pragma unroll
                    for (int e = 0; e < V; ++e)
                        acc[r * kBatchTile + i] = fmaf(b_rows[r][e], b_vector[e], acc[r * kBatchTile + i]);
            }
        }
        const float sum = warp_transpose_sum(acc);  // lane = row in quad * 8 + batch row in tile
        const int r = lane / kBatchTile, i = lane % kBatchTile;
        partial_s[(int64_t(slice) * rows + quad * 4 + r) * batch_pad + tile * kBatchTile + i] = sum;
    }
}

// Copies rows [batch, length] of T written by other blocks during this launch (through L2) into shared memory.
template <typename T>
__device__ __forceinline__ void copy_rows_to_shared(const T* source, T* target, int64_t batch, int64_t length) {
    constexpr int V = kVec16<T>;
    const int64_t vectors = batch * length / V;
    for (int64_t index = threadIdx.x; index < vectors; index += kThreads)
        *reinterpret_cast<Pack<T, V>*>(target + index * V) = load_pack_l2<T, V>(source + index * V);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_layer_fwd_kernel(const LstmLayerForwardParams params, const LstmLayerPlan plan) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const int rows = 4 * units;
    const int64_t length = lstm_layer_padded(hidden, sizeof(T));
    const int batch_pad = int(batch_padded(batch));
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem_raw);  // [4 * units, length]: row u * 4 + gate = W_hh[gate * H + unit]
    T* vector_s = rows_s + rows * length;        // [batch_pad, length]: h_{t-1}
    float* partial_s = reinterpret_cast<float*>(vector_s + batch_pad * length);

    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < rows * length; index += kThreads) {
        const int64_t row = index / length, k = index % length;
        const int64_t unit = first_unit + row / 4, gate = row % 4;
        rows_s[index] =
            (unit < hidden && k < hidden) ? weight_hh[(gate * hidden + unit) * hidden + k] : from_float<T>(0.0f);
    }
    // Batch rows past B are never loaded: zero once.
    for (int64_t index = threadIdx.x; index < (batch_pad - batch) * length; index += kThreads)
        vector_s[batch * length + index] = from_float<T>(0.0f);

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
        state_buffer[b * length + unit] = hx;
    }
    const bool saving = params.activations != nullptr;
    const T* __restrict__ input_gates = static_cast<const T*>(params.input_gates);
    T* output = static_cast<T*>(params.output);
    grid.sync();

    for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = params.reverse ? steps - 1 - s : s;
        const T* read_buffer = state_buffer + (s & 1) * batch * length;
        T* write_buffer = state_buffer + ((s + 1) & 1) * batch * length;
        const bool valid = owns && t < row_length;
        // Issued before the product so that their latency overlaps it.
        float pre[4];
#pragma unroll
        for (int gate = 0; gate < 4; ++gate)
            pre[gate] =
                valid ? to_float(input_gates[(t * batch + b) * 4 * hidden + gate * hidden + unit]) + bias[gate] : 0.0f;
        copy_rows_to_shared<T>(read_buffer, vector_s, batch, length);
        __syncthreads();
        rows_times_vectors<T>(rows_s, vector_s, partial_s, rows, length, batch_pad, plan.warps_per_item,
                              threadIdx.x / kWarpSize, threadIdx.x % kWarpSize);
        __syncthreads();
        if (owns) {
            const int64_t index = (t * batch + b) * hidden + unit;
            const T previous = vector_s[b * length + unit];
            if (saving) static_cast<T*>(params.hidden_prev)[index] = previous;
            if (valid) {
#pragma unroll
                for (int gate = 0; gate < 4; ++gate)
                    for (int slice = 0; slice < plan.warps_per_item; ++slice)
                        pre[gate] += partial_s[(int64_t(slice) * rows + unit_in_block * 4 + gate) * batch_pad + b];
                const LstmActivations act = lstm_activate(pre[0], pre[1], pre[2], pre[3]);
                cell = lstm_next_cell(act, cell);
                const T h = from_float<T>(act.out_gate * tanhf(cell));
                hidden_state = to_float(h);
                output[index] = h;
                write_buffer[b * length + unit] = h;
                if (saving) {
                    float* p_act = params.activations + (t * batch + b) * 4 * hidden + unit;
                    p_act[0] = act.in_gate;
                    p_act[hidden] = act.forget_gate;
                    p_act[2 * hidden] = act.cell_gate;
                    p_act[3 * hidden] = act.out_gate;
                }
            } else {
                output[index] = from_float<T>(0.0f);
                write_buffer[b * length + unit] = previous;
                // Skipped steps save zeros: the backward never reads them, but the saved tensor is fully defined.
                if (saving) {
                    float* p_act = params.activations + (t * batch + b) * 4 * hidden + unit;
                    p_act[0] = p_act[hidden] = p_act[2 * hidden] = p_act[3 * hidden] = 0.0f;
                }
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
    extern __shared__ __align__(16) unsigned char smem_raw[];
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const int rows = int(round_up(units, 4));
    const int64_t gates = 4 * hidden;
    const int64_t length = lstm_layer_padded(gates, sizeof(T));
    const int batch_pad = int(batch_padded(batch));
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem_raw);  // [rows, length]: row u = column first_unit + u of W_hh
    T* vector_s = rows_s + rows * length;        // [batch_pad, length]: gate gradients of the later step
    float* partial_s = reinterpret_cast<float*>(vector_s + batch_pad * length);

    // Consecutive threads read consecutive columns of one row of W_hh (coalesced); the transpose lands in shared.
    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < rows * length; index += kThreads) {
        const int64_t gate_row = index / rows, row = index % rows;
        const int64_t unit = first_unit + row;
        const bool present = row < units && unit < hidden && gate_row < gates;
        rows_s[row * length + gate_row] = present ? weight_hh[gate_row * hidden + unit] : from_float<T>(0.0f);
    }
    for (int64_t index = threadIdx.x; index < (batch_pad - batch) * length; index += kThreads)
        vector_s[batch * length + index] = from_float<T>(0.0f);

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
            copy_rows_to_shared<T>(grad_gates + t_later * batch * length, vector_s, batch, length);
            __syncthreads();
            rows_times_vectors<T>(rows_s, vector_s, partial_s, rows, length, batch_pad, plan.warps_per_item,
                                  threadIdx.x / kWarpSize, threadIdx.x % kWarpSize);
            __syncthreads();
        }
        if (owns) {
            float grad_h = grad_h_pass;
            if (has_later)
                for (int slice = 0; slice < plan.warps_per_item; ++slice)
                    grad_h += partial_s[(int64_t(slice) * rows + unit_in_block) * batch_pad + b];
            if (s < 0) {
                static_cast<T*>(params.grad_hx)[b * hidden + unit] = from_float<T>(grad_h);
                static_cast<T*>(params.grad_cx)[b * hidden + unit] = from_float<T>(grad_c);
            } else if (valid) {
                const LstmGateGrads grads = lstm_backward(act, cell_prev, grad_h + grad_out, grad_c);
                T* p_grad = grad_gates + (t * batch + b) * length + unit;
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
cudaError_t plan_for(Kernel kernel, int64_t batch, int64_t hidden, int rows_per_unit_rounding, bool backward,
                     int element_size, LstmLayerPlan* plan) {
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
    const int rows = backward ? int(round_up(units, rows_per_unit_rounding)) : int(4 * units);
    const int64_t length = lstm_layer_padded(backward ? 4 * hidden : hidden, element_size);
    const int items = rows / 4 * int(batch_padded(batch) / kBatchTile);
    int warps_per_item = 1;
    while (2 * warps_per_item * items <= kWarps) warps_per_item *= 2;
    const int64_t shared = shared_bytes_for(rows, length, batch, warps_per_item, element_size);
    if (shared > limits.max_shared_per_block) return cudaSuccess;
    status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
    if (status != cudaSuccess) return status;
    int resident = 0;
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, size_t(shared));
    if (status != cudaSuccess) return status;
    const int64_t blocks = ceil_div(hidden, units);
    if (blocks > int64_t(resident) * limits.multiprocessors) return cudaSuccess;
    plan->units_per_block = int(units);
    plan->blocks = int(blocks);
    plan->warps_per_item = warps_per_item;
    plan->shared_bytes = shared;
    return cudaSuccess;
}

}  // namespace

template <typename T>
cudaError_t lstm_layer_plan(int64_t batch, int64_t hidden, bool backward, LstmLayerPlan* plan) {
    if (backward) return plan_for(lstm_layer_bwd_kernel<T>, batch, hidden, 4, true, sizeof(T), plan);
    return plan_for(lstm_layer_fwd_kernel<T>, batch, hidden, 4, false, sizeof(T), plan);
}

template <typename T>
cudaError_t lstm_layer_fwd(const LstmLayerForwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0 || params.steps == 0) return cudaSuccess;
    LstmLayerPlan plan;
    const cudaError_t status = lstm_layer_plan<T>(params.batch, params.hidden, false, &plan);
    if (status != cudaSuccess) return status;
    if (plan.blocks == 0) return cudaErrorInvalidConfiguration;
    void* args[] = {const_cast<LstmLayerForwardParams*>(&params), &plan};
    return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(lstm_layer_fwd_kernel<T>), dim3(plan.blocks),
                                       dim3(kThreads), args, size_t(plan.shared_bytes), stream);
}

template <typename T>
cudaError_t lstm_layer_bwd(const LstmLayerBackwardParams& params, cudaStream_t stream) {
    if (params.batch == 0 || params.hidden == 0 || params.steps == 0) return cudaSuccess;
    LstmLayerPlan plan;
    const cudaError_t status = lstm_layer_plan<T>(params.batch, params.hidden, true, &plan);
    if (status != cudaSuccess) return status;
    if (plan.blocks == 0) return cudaErrorInvalidConfiguration;
    void* args[] = {const_cast<LstmLayerBackwardParams*>(&params), &plan};
    return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(lstm_layer_bwd_kernel<T>), dim3(plan.blocks),
                                       dim3(kThreads), args, size_t(plan.shared_bytes), stream);
}

#define S2S_FAST_INSTANTIATE_LSTM_LAYER(T)                                               \
    template cudaError_t lstm_layer_plan<T>(int64_t, int64_t, bool, LstmLayerPlan*);     \
    template cudaError_t lstm_layer_fwd<T>(const LstmLayerForwardParams&, cudaStream_t); \
    template cudaError_t lstm_layer_bwd<T>(const LstmLayerBackwardParams&, cudaStream_t);

S2S_FAST_INSTANTIATE_LSTM_LAYER(float)
S2S_FAST_INSTANTIATE_LSTM_LAYER(__half)
S2S_FAST_INSTANTIATE_LSTM_LAYER(__nv_bfloat16)

}  // namespace s2s_fast
