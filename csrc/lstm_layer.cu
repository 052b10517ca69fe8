// Persistent LSTM layer kernels (forward and backward), one cooperative launch per layer direction. See
// lstm_layer.h for the decomposition and the served sizes.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <type_traits>
#include <utility>

#include "common.h"
#include "lstm_layer.h"
#include "lstm_math.h"

namespace s2s_fast {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// (hidden unit, batch row) pairs one thread owns at most.
constexpr int kMaxPairs = 4;
static_assert(kThreads * kMaxPairs == kLstmLayerMaxPairs, "a block serves kLstmLayerMaxPairs pairs");
// Batch rows of one warp product: the n of mma.m16n8k16, and with 4 rows the 32 sums of one transpose-sum.
constexpr int kBatchTile = 8;
// Rows and reduction depth of one tensor-core product (mma.m16n8k16).
constexpr int kMmaRows = 16;
constexpr int kMmaDepth = 16;
// Reduction lengths up to this are held whole (one buffer); longer ones stream in double-buffered chunks, the
// largest of kChunks that fits, so that the copy of one chunk overlaps the product of the one before.
constexpr int64_t kWholeUpTo = 256;
constexpr int64_t kChunks[] = {1024, 512, 256, 128, 64, 32};

// Shared-memory layout of one block; the plan (host) and the kernels (device) compute it with this one function.
// rows_s [rows + 1, row_stride] T holds the block's rows of W_hh (forward) or its columns (backward) and, last, a
// zero row that tensor-core lanes past the held rows read; buffers [buffers, batch_pad, chunk_stride] T hold chunks
// of the step's broadcast vector; partial_s [warps_per_item, rows, batch_pad] fp32 accumulates the products.
struct Layout {
    int rows;              // held rows (a multiple of 4, or of 8 for tensor cores), zero past the block's real ones
    int64_t length;        // reduction length, zero past the real one
    int64_t row_stride;    // elements between rows of rows_s
    int64_t chunk;         // reduction columns per chunk
    int chunks;
    int buffers;           // 1 (the whole vector) or 2 (double-buffered chunks)
    int64_t chunk_stride;  // elements between batch rows of a buffer
    int batch_pad;         // batch rows of a buffer, zero past B
    int rows_per_item;     // rows of one warp product: 4 (float32, CUDA cores) or 16 (float16/bfloat16, tensor cores)
    int items;             // warp products per chunk
    int warps_per_item;    // warps splitting the reduction of one product
    int64_t buffers_offset;  // bytes
    int64_t partial_offset;  // bytes
    int64_t shared_bytes;
};

__host__ __device__ inline Layout layout_for(int element_size, int64_t units, int64_t batch, int64_t hidden,
                                             bool backward, int64_t chunk) {
    Layout layout{};
    const bool tensor_cores = element_size == 2;
    layout.rows_per_item = tensor_cores ? kMmaRows : 4;
    // An mma tile whose upper 8 rows lie past the held rows reads the zero row for them.
    layout.rows = int(round_up(backward ? units : 4 * units, tensor_cores ? kMmaRows / 2 : 4));
    layout.length = round_up(backward ? 4 * hidden : hidden, tensor_cores ? kMmaDepth : 16 / element_size);
    // 16 bytes of padding per row put the 8 rows of an ldmatrix in distinct banks.
    const int64_t pad = tensor_cores ? 8 : 0;
    layout.row_stride = layout.length + pad;
    layout.chunk = chunk < layout.length ? chunk : layout.length;
    layout.chunks = int(ceil_div(layout.length, layout.chunk));
    layout.buffers = layout.chunks > 1 ? 2 : 1;
    layout.chunk_stride = layout.chunk + pad;
    layout.batch_pad = int(round_up(batch, kBatchTile));
    layout.items = int(ceil_div(layout.rows, layout.rows_per_item)) * (layout.batch_pad / kBatchTile);
    layout.warps_per_item = 1;
    while (2 * layout.warps_per_item * layout.items <= kWarps) layout.warps_per_item *= 2;
    layout.buffers_offset = (layout.rows + 1) * layout.row_stride * element_size;
    layout.partial_offset =
        layout.buffers_offset + int64_t(layout.buffers) * layout.batch_pad * layout.chunk_stride * element_size;
    layout.shared_bytes = layout.partial_offset + int64_t(layout.warps_per_item) * layout.rows * layout.batch_pad * 4;
    return layout;
}

// Starts copying reduction columns [first, first + width) of the step's vector (B rows of source_length elements,
// written by other blocks during this launch) into a buffer; columns past source_length (padding up to the mma depth)
// become zeros. The copies land at the matching async_copy_wait.
template <typename T>
__device__ void start_chunk_copy(const T* source, int64_t source_length, T* buffer, const Layout& layout,
                                 int64_t batch, int64_t first, int64_t width) {
    constexpr int V = kVec16<T>;
    const int64_t vectors = width / V;
    for (int64_t index = threadIdx.x; index < batch * vectors; index += kThreads) {
        const int64_t b = index / vectors, column = first + (index % vectors) * V;
        T* target = buffer + b * layout.chunk_stride + column - first;
        if (column < source_length) {
            async_copy_16(target, source + b * source_length + column);
        } else {
            *reinterpret_cast<int4*>(target) = int4{0, 0, 0, 0};
        }
    }
    async_copy_commit();
}

// CUDA cores: a warp takes 4 rows x 8 batch rows and one of warps_per_item slices of the chunk; lanes take 16-byte
// pieces; one transpose-sum reduces the 32 partial sums (lane = row * 8 + batch row).
template <typename T>
__device__ void accumulate_fma(const T* rows_s, const T* chunk_s, float* partial_s, const Layout& layout,
                               int64_t first, int64_t width, bool initialise, int item, int slice, int lane) {
    constexpr int V = kVec16<T>;
    const int batch_tiles = layout.batch_pad / kBatchTile;
    const int quad = item / batch_tiles, tile = item % batch_tiles;
    const T* p_rows = rows_s + int64_t(quad) * 4 * layout.row_stride + first;
    const T* p_vectors = chunk_s + int64_t(tile) * kBatchTile * layout.chunk_stride;
    float acc[4 * kBatchTile];  // [row in quad, batch row in tile]
#pragma unroll
    for (int i = 0; i < 4 * kBatchTile; ++i) acc[i] = 0.0f;
    for (int64_t c = int64_t(slice) * kWarpSize + lane; c < width / V; c += int64_t(kWarpSize) * layout.warps_per_item) {
        float b_rows[4][V];
#pragma unroll
        for (int r = 0; r < 4; ++r) load_floats<T, V>(p_rows + r * layout.row_stride + c * V, b_rows[r]);
#pragma unroll
        for (int i = 0; i < kBatchTile; ++i) {
            float b_vector[V];
            load_floats<T, V>(p_vectors + i * layout.chunk_stride + c * V, b_vector);
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int e = 0; e < V; ++e)
                    acc[r * kBatchTile + i] = fmaf(b_rows[r][e], b_vector[e], acc[r * kBatchTile + i]);
        }
    }
    const float sum = warp_transpose_sum(acc);
    const int r = lane / kBatchTile, i = lane % kBatchTile;
    float& out = partial_s[(int64_t(slice) * layout.rows + quad * 4 + r) * layout.batch_pad + tile * kBatchTile + i];
    out = initialise ? sum : out + sum;
}

// Tensor cores: a warp takes 16 rows x 8 batch rows and one of warps_per_item slices of the chunk's 16-deep steps;
// ldmatrix loads the fragments of mma_m16n8k16 (common.h), whose b columns are batch rows. Lanes past the held rows
// address the zero row.
template <typename T>
__device__ void accumulate_mma(const T* rows_s, const T* chunk_s, float* partial_s, const Layout& layout,
                               int64_t first, int64_t width, bool initialise, int item, int slice, int lane) {
    const int batch_tiles = layout.batch_pad / kBatchTile;
    const int row_tile = item / batch_tiles, tile = item % batch_tiles;
    const int group = lane / 4, pair = (lane % 4) * 2;
    // A: matrix m = lane / 8 holds rows 8 (m % 2).. and columns 8 (m / 2)..; B: matrix lane / 8 (of 2) columns 8 m..
    const int a_row = row_tile * kMmaRows + lane % 8 + 8 * ((lane / 8) % 2);
    const T* p_a = rows_s + int64_t(a_row < layout.rows ? a_row : layout.rows) * layout.row_stride + first +
                   8 * (lane / 16);
    const T* p_b = chunk_s + int64_t(tile * kBatchTile + lane % 8) * layout.chunk_stride + 8 * ((lane / 8) % 2);
    // Uniform over the warp: whether this tile's rows 8..15 are held rows.
    const bool upper = row_tile * kMmaRows + kMmaRows / 2 < layout.rows;
    float* p_out = partial_s + (int64_t(slice) * layout.rows + row_tile * kMmaRows + group) * layout.batch_pad +
                   tile * kBatchTile + pair;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (!initialise) {
        acc[0] = p_out[0];
        acc[1] = p_out[1];
        if (upper) {
            acc[2] = p_out[8 * layout.batch_pad];
            acc[3] = p_out[8 * layout.batch_pad + 1];
        }
    }
    for (int64_t step = slice; step < width / kMmaDepth; step += layout.warps_per_item) {
        uint32_t a[4], b[2];
        load_matrix<4>(a, p_a + step * kMmaDepth);
        load_matrix<2>(b, p_b + step * kMmaDepth);
        mma_m16n8k16<T>(acc, a, b);
    }
    p_out[0] = acc[0];
    p_out[1] = acc[1];
    if (upper) {
        p_out[8 * layout.batch_pad] = acc[2];
        p_out[8 * layout.batch_pad + 1] = acc[3];
    }
}

// partial_s[slice, row, b] = rows_s[row, this slice of the reduction] . vector[b, the same slice], the vector read
// from global memory (B rows of source_length elements) chunk by chunk through double-buffered shared memory. Ends
// with a barrier: the partials are complete.
template <typename T>
__device__ void rows_times_vector(const T* rows_s, const T* source, int64_t source_length, T* buffers,
                                  float* partial_s, const Layout& layout, int64_t batch) {
    const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
    const int rounds = int(ceil_div(int64_t(layout.items) * layout.warps_per_item, kWarps));
    const int64_t buffer_elements = int64_t(layout.batch_pad) * layout.chunk_stride;
    start_chunk_copy<T>(source, source_length, buffers, layout, batch, 0, layout.chunk);
    for (int c = 0; c < layout.chunks; ++c) {
        const int64_t first = int64_t(c) * layout.chunk;
        const int64_t width = layout.length - first < layout.chunk ? layout.length - first : layout.chunk;
        if (c + 1 < layout.chunks) {
            // Every thread is done with the other buffer (chunk c - 1) before the next chunk lands in it.
            __syncthreads();
            const int64_t next = first + layout.chunk;
            start_chunk_copy<T>(source, source_length, buffers + ((c + 1) % 2) * buffer_elements, layout, batch, next,
                                layout.length - next < layout.chunk ? layout.length - next : layout.chunk);
            async_copy_wait<1>();
        } else {
            async_copy_wait<0>();
        }
        __syncthreads();
        const T* chunk_s = buffers + (c % 2) * buffer_elements;
        for (int round = 0; round < rounds; ++round) {
            const int work = round * kWarps + warp;
            const int item = work / layout.warps_per_item, slice = work % layout.warps_per_item;
            if (item >= layout.items) continue;
            if constexpr (sizeof(T) == 2) {
                accumulate_mma<T>(rows_s, chunk_s, partial_s, layout, first, width, c == 0, item, slice, lane);
            } else {
                accumulate_fma<T>(rows_s, chunk_s, partial_s, layout, first, width, c == 0, item, slice, lane);
            }
        }
    }
    __syncthreads();
}

// The product for one (row, batch row): the sum of the warps_per_item slices.
__device__ __forceinline__ float product_at(const float* partial_s, const Layout& layout, int row, int64_t b) {
    float sum = 0.0f;
    for (int slice = 0; slice < layout.warps_per_item; ++slice)
        sum += partial_s[(int64_t(slice) * layout.rows + row) * layout.batch_pad + b];
    return sum;
}

// Zeroes `count` elements of shared memory.
template <typename T>
__device__ __forceinline__ void zero_shared(T* target, int64_t count) {
    for (int64_t index = threadIdx.x; index < count; index += kThreads) target[index] = from_float<T>(0.0f);
}

// The (hidden unit, batch row) pairs of this thread: pair p is threadIdx.x + p * kThreads of the block's J * B.
struct Pair {
    int unit_in_block;
    int64_t unit;
    int64_t b;
    bool owned;
};

__device__ __forceinline__ Pair pair_of(int p, int units, int64_t first_unit, int64_t batch, int64_t hidden) {
    const int64_t index = threadIdx.x + int64_t(p) * kThreads;
    Pair pair;
    pair.unit_in_block = int(index % units);
    pair.unit = first_unit + pair.unit_in_block;
    pair.b = index / units;
    pair.owned = pair.b < batch && pair.unit < hidden;
    return pair;
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_layer_fwd_kernel(const LstmLayerForwardParams params, const LstmLayerPlan plan) {
    unsigned char* smem = dynamic_shared<unsigned char>();
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const Layout layout = layout_for(sizeof(T), units, batch, hidden, false, plan.chunk);
    const int64_t state_length = lstm_layer_padded(hidden, sizeof(T));  // row length of the global h buffers
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem);  // row u * 4 + gate = W_hh[gate * H + first_unit + u]; then the zero row
    T* buffers = reinterpret_cast<T*>(smem + layout.buffers_offset);
    float* partial_s = reinterpret_cast<float*>(smem + layout.partial_offset);

    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < (layout.rows + 1) * layout.length; index += kThreads) {
        const int64_t row = index / layout.length, k = index % layout.length;
        const int64_t unit = first_unit + row / 4, gate = row % 4;
        const bool present = row < 4 * units && unit < hidden && k < hidden;
        rows_s[row * layout.row_stride + k] =
            present ? weight_hh[(gate * hidden + unit) * hidden + k] : from_float<T>(0.0f);
    }
    // The copies fill only the first B rows of the buffers.
    zero_shared(buffers, int64_t(layout.buffers) * layout.batch_pad * layout.chunk_stride);

    // Each pair's cell state stays in this thread's registers for all steps.
    const int pairs = int(ceil_div(int64_t(units) * batch, kThreads));
    T* state_buffer = static_cast<T*>(params.state_buffer);
    float bias[kMaxPairs][4] = {}, cell[kMaxPairs] = {}, hidden_state[kMaxPairs] = {};
    int64_t row_length[kMaxPairs];
#pragma unroll
    for (int p = 0; p < kMaxPairs; ++p) {
        const Pair pair = pair_of(p, units, first_unit, batch, hidden);
        row_length[p] = steps;
        if (p >= pairs || !pair.owned) continue;
#pragma unroll
        for (int gate = 0; gate < 4; ++gate) {
            if (params.bias_ih != nullptr)
                bias[p][gate] += to_float(static_cast<const T*>(params.bias_ih)[gate * hidden + pair.unit]);
            if (params.bias_hh != nullptr)
                bias[p][gate] += to_float(static_cast<const T*>(params.bias_hh)[gate * hidden + pair.unit]);
        }
        if (params.lengths != nullptr) row_length[p] = params.lengths[pair.b];
        cell[p] = to_float(static_cast<const T*>(params.cx)[pair.b * hidden + pair.unit]);
        const T hx = static_cast<const T*>(params.hx)[pair.b * hidden + pair.unit];
        hidden_state[p] = to_float(hx);
        state_buffer[pair.b * state_length + pair.unit] = hx;
    }
    const bool saving = params.activations != nullptr;
    const T* __restrict__ input_gates = static_cast<const T*>(params.input_gates);
    T* output = static_cast<T*>(params.output);
    grid.sync();

    for (int64_t s = 0; s < steps; ++s) {
        const int64_t t = params.reverse ? steps - 1 - s : s;
        const T* read_buffer = state_buffer + (s & 1) * batch * state_length;
        T* write_buffer = state_buffer + ((s + 1) & 1) * batch * state_length;
        // Issued before the product so that their latency overlaps it.
        float pre[kMaxPairs][4];
#pragma unroll
        for (int p = 0; p < kMaxPairs; ++p) {
            const Pair pair = pair_of(p, units, first_unit, batch, hidden);
            const bool valid = p < pairs && pair.owned && t < row_length[p];
#pragma unroll
            for (int gate = 0; gate < 4; ++gate)
                pre[p][gate] = valid ? to_float(input_gates[(t * batch + pair.b) * 4 * hidden + gate * hidden +
                                                            pair.unit]) +
                                           bias[p][gate]
                                     : 0.0f;
        }
        rows_times_vector<T>(rows_s, read_buffer, state_length, buffers, partial_s, layout, batch);
#pragma unroll
        for (int p = 0; p < kMaxPairs; ++p) {
            const Pair pair = pair_of(p, units, first_unit, batch, hidden);
            if (p >= pairs || !pair.owned) continue;
            const int64_t index = (t * batch + pair.b) * hidden + pair.unit;
            const T previous = load_pack_l2<T, 1>(read_buffer + pair.b * state_length + pair.unit).values[0];
            if (saving) static_cast<T*>(params.hidden_prev)[index] = previous;
            float* p_act = saving ? params.activations + (t * batch + pair.b) * 4 * hidden + pair.unit : nullptr;
            if (t < row_length[p]) {
#pragma unroll
                for (int gate = 0; gate < 4; ++gate)
                    pre[p][gate] += product_at(partial_s, layout, pair.unit_in_block * 4 + gate, pair.b);
                const LstmActivations act = lstm_activate(pre[p][0], pre[p][1], pre[p][2], pre[p][3]);
                cell[p] = lstm_next_cell(act, cell[p]);
                const T h = from_float<T>(act.out_gate * tanhf(cell[p]));
                hidden_state[p] = to_float(h);
                output[index] = h;
                write_buffer[pair.b * state_length + pair.unit] = h;
                if (saving) {
                    p_act[0] = act.in_gate;
                    p_act[hidden] = act.forget_gate;
                    p_act[2 * hidden] = act.cell_gate;
                    p_act[3 * hidden] = act.out_gate;
                }
            } else {
                output[index] = from_float<T>(0.0f);
                write_buffer[pair.b * state_length + pair.unit] = previous;
                // Skipped steps save zeros: the backward never reads them, but the saved tensor is fully defined.
                if (saving) p_act[0] = p_act[hidden] = p_act[2 * hidden] = p_act[3 * hidden] = 0.0f;
            }
            if (saving) params.cell_states[index] = cell[p];
        }
        grid.sync();
    }
#pragma unroll
    for (int p = 0; p < kMaxPairs; ++p) {
        const Pair pair = pair_of(p, units, first_unit, batch, hidden);
        if (p >= pairs || !pair.owned) continue;
        static_cast<T*>(params.hy)[pair.b * hidden + pair.unit] = from_float<T>(hidden_state[p]);
        static_cast<T*>(params.cy)[pair.b * hidden + pair.unit] = from_float<T>(cell[p]);
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    lstm_layer_bwd_kernel(const LstmLayerBackwardParams params, const LstmLayerPlan plan) {
    unsigned char* smem = dynamic_shared<unsigned char>();
    cg::grid_group grid = cg::this_grid();
    const int64_t steps = params.steps, batch = params.batch, hidden = params.hidden;
    const int units = plan.units_per_block;
    const Layout layout = layout_for(sizeof(T), units, batch, hidden, true, plan.chunk);
    const int64_t gates = 4 * hidden;
    const int64_t gate_length = lstm_layer_padded(gates, sizeof(T));  // row length of the global gate gradients
    const int64_t first_unit = int64_t(blockIdx.x) * units;
    T* rows_s = reinterpret_cast<T*>(smem);  // row u = column first_unit + u of W_hh; then the zero row
    T* buffers = reinterpret_cast<T*>(smem + layout.buffers_offset);
    float* partial_s = reinterpret_cast<float*>(smem + layout.partial_offset);

    // Consecutive threads read consecutive columns of one row of W_hh (coalesced); the transpose lands in shared.
    const T* __restrict__ weight_hh = static_cast<const T*>(params.weight_hh);
    for (int64_t index = threadIdx.x; index < (layout.rows + 1) * layout.length; index += kThreads) {
        const int64_t gate_row = index / (layout.rows + 1), row = index % (layout.rows + 1);
        const int64_t unit = first_unit + row;
        const bool present = row < units && unit < hidden && gate_row < gates;
        rows_s[row * layout.row_stride + gate_row] =
            present ? weight_hh[gate_row * hidden + unit] : from_float<T>(0.0f);
    }
    zero_shared(buffers, int64_t(layout.buffers) * layout.batch_pad * layout.chunk_stride);

    // Gradients reaching the state after the step being processed: grad_h_pass goes straight to the earlier state
    // (set where a step was skipped), the W_hh product of the later step's gate gradients is added to it.
    const int pairs = int(ceil_div(int64_t(units) * batch, kThreads));
    float grad_h_pass[kMaxPairs] = {}, grad_c[kMaxPairs] = {};
    int64_t row_length[kMaxPairs];
#pragma unroll
    for (int p = 0; p < kMaxPairs; ++p) {
        const Pair pair = pair_of(p, units, first_unit, batch, hidden);
        row_length[p] = steps;
        if (p >= pairs || !pair.owned) continue;
        if (params.lengths != nullptr) row_length[p] = params.lengths[pair.b];
        grad_h_pass[p] = to_float(static_cast<const T*>(params.grad_hy)[pair.b * hidden + pair.unit]);
        grad_c[p] = to_float(static_cast<const T*>(params.grad_cy)[pair.b * hidden + pair.unit]);
    }
    T* grad_gates = static_cast<T*>(params.grad_gates);
    const T* __restrict__ grad_output = static_cast<const T*>(params.grad_output);
    // Step index s runs from the last processed step back to 0; s = -1 only collects the gradient of hx.
    for (int64_t s = steps - 1; s >= -1; --s) {
        const int64_t t = s < 0 ? -1 : (params.reverse ? steps - 1 - s : s);
        const bool has_later = s + 1 < steps;
        if (has_later) {
            const int64_t t_later = params.reverse ? steps - 2 - s : s + 1;
            rows_times_vector<T>(rows_s, grad_gates + t_later * batch * gate_length, gate_length, buffers,
                                 partial_s, layout, batch);
        }
#pragma unroll
        for (int p = 0; p < kMaxPairs; ++p) {
            const Pair pair = pair_of(p, units, first_unit, batch, hidden);
            if (p >= pairs || !pair.owned) continue;
            float grad_h = grad_h_pass[p];
            if (has_later) grad_h += product_at(partial_s, layout, pair.unit_in_block, pair.b);
            if (s < 0) {
                static_cast<T*>(params.grad_hx)[pair.b * hidden + pair.unit] = from_float<T>(grad_h);
                static_cast<T*>(params.grad_cx)[pair.b * hidden + pair.unit] = from_float<T>(grad_c[p]);
            } else if (t < row_length[p]) {
                const float* p_act = params.activations + (t * batch + pair.b) * 4 * hidden + pair.unit;
                const LstmActivations act{p_act[0], p_act[hidden], p_act[2 * hidden], p_act[3 * hidden]};
                const int64_t t_prev = params.reverse ? t + 1 : t - 1;
                const float cell_prev =
                    s == 0 ? to_float(static_cast<const T*>(params.cx)[pair.b * hidden + pair.unit])
                           : params.cell_states[(t_prev * batch + pair.b) * hidden + pair.unit];
                const float grad_out = to_float(grad_output[(t * batch + pair.b) * hidden + pair.unit]);
                const LstmGateGrads grads = lstm_backward(act, cell_prev, grad_h + grad_out, grad_c[p]);
                T* p_grad = grad_gates + (t * batch + pair.b) * gate_length + pair.unit;
                p_grad[0] = from_float<T>(grads.in_gate);
                p_grad[hidden] = from_float<T>(grads.forget_gate);
                p_grad[2 * hidden] = from_float<T>(grads.cell_gate);
                p_grad[3 * hidden] = from_float<T>(grads.out_gate);
                grad_c[p] = grads.cx;
                grad_h_pass[p] = 0.0f;
            } else {
                grad_h_pass[p] = grad_h;
            }
        }
        if (s >= 0) grid.sync();
    }
}

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel and device, to the device's maximum: setting it
// per call, to the call's size, would race between threads that launch different sizes.
std::mutex opt_in_mutex;
std::set<std::pair<const void*, int>> opted_in;

template <typename Kernel>
cudaError_t opt_in_shared_memory(Kernel kernel, int device, int max_shared) {
    const std::lock_guard<std::mutex> lock(opt_in_mutex);
    const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
    if (opted_in.count(key)) return cudaSuccess;
    const cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_shared);
    if (status == cudaSuccess) opted_in.insert(key);
    return status;
}

// The chunk a plan streams: the whole vector up to kWholeUpTo when it fits, else the largest of kChunks under the
// length whose layout fits; 0 when none does.
int64_t choose_chunk(int element_size, int64_t units, int64_t batch, int64_t hidden, bool backward,
                     int64_t max_shared) {
    const auto fits = [&](int64_t chunk) {
        return layout_for(element_size, units, batch, hidden, backward, chunk).shared_bytes <= max_shared;
    };
    const int64_t length = layout_for(element_size, units, batch, hidden, backward, 1).length;
    if (length <= kWholeUpTo && fits(length)) return length;
    for (const int64_t chunk : kChunks)
        if (chunk < length && fits(chunk)) return chunk;
    return 0;
}

template <typename Kernel>
cudaError_t compute_plan(Kernel kernel, int element_size, int64_t batch, int64_t hidden, bool backward,
                         LstmLayerPlan* plan) {
    *plan = LstmLayerPlan{};
    DeviceLimits limits;
    cudaError_t status = current_device_limits(&limits);
    if (status != cudaSuccess) return status;
    int device = 0, cooperative = 0;
    status = cudaGetDevice(&device);
    if (status != cudaSuccess) return status;
    status = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
    if (status != cudaSuccess || !cooperative) return status;
    const int64_t units = ceil_div(hidden, limits.multiprocessors);
    if (units * batch > kLstmLayerMaxPairs) return cudaSuccess;
    const int64_t chunk = choose_chunk(element_size, units, batch, hidden, backward, limits.max_shared_per_block);
    if (chunk == 0) return cudaSuccess;
    const Layout layout = layout_for(element_size, units, batch, hidden, backward, chunk);
    status = opt_in_shared_memory(kernel, device, limits.max_shared_per_block);
    if (status != cudaSuccess) return status;
    int resident = 0;
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kThreads, size_t(layout.shared_bytes));
    if (status != cudaSuccess) return status;
    const int64_t blocks = ceil_div(hidden, units);
    if (blocks > int64_t(resident) * limits.multiprocessors) return cudaSuccess;
    plan->units_per_block = int(units);
    plan->blocks = int(blocks);
    plan->shared_bytes = layout.shared_bytes;
    plan->chunk = chunk;
    return cudaSuccess;
}

// Plans per (kernel, device, batch, hidden): a layer call asks for its plan at every launch.
std::mutex plans_mutex;
std::map<std::tuple<const void*, int, int64_t, int64_t>, LstmLayerPlan> plans;

template <typename Kernel>
cudaError_t plan_for(Kernel kernel, int element_size, int64_t batch, int64_t hidden, bool backward,
                     LstmLayerPlan* plan) {
    *plan = LstmLayerPlan{};
    if (batch <= 0 || hidden <= 0) return cudaSuccess;
    int device = 0;
    const cudaError_t status = cudaGetDevice(&device);
    if (status != cudaSuccess) return status;
    const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), device, batch, hidden);
    {
        const std::lock_guard<std::mutex> lock(plans_mutex);
        const auto found = plans.find(key);
        if (found != plans.end()) {
            *plan = found->second;
            return cudaSuccess;
        }
    }
    const cudaError_t planned = compute_plan(kernel, element_size, batch, hidden, backward, plan);
    if (planned == cudaSuccess) {
        const std::lock_guard<std::mutex> lock(plans_mutex);
        plans[key] = *plan;
    }
    return planned;
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
