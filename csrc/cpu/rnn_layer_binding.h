// Host-side helpers the CPU RNN layers' bindings (lstm_layer.cpp, gru_layer.cpp) share: argument checks, the order the
// rows run in, and the hidden state before each step, which both backwards multiply with their gate gradients for
// grad weight_hh (the attention decoders' too).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <vector>

#include "products.h"
#include "rnn_layer.h"

namespace s2s_fast::cpu {

using at::Tensor;

inline void check_tensor(const char* op, const Tensor& tensor, const char* name, at::IntArrayRef shape,
                         const Tensor& like) {
    TORCH_CHECK(tensor.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got ", tensor.device());
    TORCH_CHECK(tensor.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ",
                tensor.scalar_type(), " but input has ", like.scalar_type());
    TORCH_CHECK(tensor.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ",
                tensor.sizes());
}

// Lengths as a contiguous int64 CPU tensor with every value in [0, steps], or nullopt.
inline std::optional<Tensor> checked_lengths(const char* op, const std::optional<Tensor>& lengths, int64_t batch,
                                             int64_t steps) {
    if (!lengths) return std::nullopt;
    TORCH_CHECK(lengths->device().is_cpu() && lengths->scalar_type() == at::kLong && lengths->dim() == 1 &&
                    lengths->size(0) == batch,
                op, ": lengths must be an int64 CPU tensor of shape [", batch, "], got ",
                lengths->scalar_type(), " ", lengths->sizes(), " on ", lengths->device());
    Tensor values = lengths->contiguous();
    const int64_t* data = values.data_ptr<int64_t>();
    for (int64_t b = 0; b < batch; ++b) {
        TORCH_CHECK(data[b] >= 0 && data[b] <= steps, op, ": lengths[", b, "] = ", data[b],
                    " is outside [0, T] with T = ", steps);
    }
    return values;
}

// weight_hh^T for the per-step products h @ weight_hh^T through ATen: a contiguous copy when the layer runs several
// steps of several rows (MKL's small products with a transposed operand ran up to 2.5x slower here), the transposed
// view for one row (its matrix-vector product ran as fast either way, and copying cost up to a fifth of the layer's
// forward at H=512) or one step (a cell: the copy would be read once).
inline Tensor step_weight(const Tensor& weight_hh, int64_t batch, int64_t steps) {
    return batch > 1 && steps > 1 ? weight_hh.t().contiguous() : weight_hh.t();
}

// The per-step products h @ weight_hh^T: with weight_hh itself (oneDNN's linear weight, no copy) where they go through
// oneDNN (product_route for the full batch), in bfloat16 (rounded, and packed once over several steps) or in
// float32; else with step_weight's operand for ATen. Under bfloat16 a step whose running rows fall under
// the threshold (the tail of a batch with lengths; packed products have none where torch rounds its own, bf16_pays)
// runs through ATen with weight_hh^T as a view. `across_calls`: an inference call's, its packed bfloat16 weight kept
// across calls (Product).
inline Product step_product(const Tensor& weight_hh, int64_t batch, int64_t steps, bool across_calls = false) {
    const bool repeated = steps > 1;
    const bool bf16 = bf16_operand(weight_hh);
    if (product_route(weight_hh.scalar_type(), batch, weight_hh.numel(), bf16, repeated || across_calls) !=
        Route::aten) {
        return Product(weight_hh.t(), repeated, across_calls);
    }
    return Product(step_weight(weight_hh, batch, steps), repeated, across_calls);
}

// The order a layer direction runs its rows in, and where each step's rows sit in its per-step buffers (rnn_layer.h).
//
// With per-row lengths below T the rows run longest first (a stable sort), so the rows still running at step s are
// the first active[s] of the order: the per-step products through weight_hh take those rows only, and the per-step
// buffers (input gates, the saved gates and cells, the gate gradients, h before each step) hold running rows only,
// step after step, `rows` in all, so the input and weight-gradient products skip the padding as well. A g2p encoder
// batch of lengths in (T/2, T] is about a fifth padding. Where every row runs every step the order is the batch's
// and step s's rows sit at their time's padded positions (base = time * B): the buffers are the padded [T, B, *]
// layout itself and nothing is gathered.
struct RnnSchedule {
    Tensor order;                 // [B] int64: the batch row at each run position; undefined: the batch's order
    Tensor positions;             // [rows] int64: each buffer row's padded position t * B + b; undefined: the same
    std::vector<int64_t> active;  // [T]: rows running at each step (non-increasing)
    std::vector<int64_t> base;    // [T]: the buffer row of each step's first running row
    int64_t rows = 0;

    const int64_t* order_ptr() const { return order.defined() ? order.data_ptr<int64_t>() : nullptr; }
};

inline RnnSchedule rnn_schedule(const std::optional<Tensor>& lengths, int64_t batch, int64_t steps, bool reverse) {
    RnnSchedule schedule;
    schedule.active.resize(steps);
    schedule.base.resize(steps);
    const int64_t* length = lengths ? lengths->data_ptr<int64_t>() : nullptr;
    const bool padded = length != nullptr && std::any_of(length, length + batch, [&](int64_t l) { return l < steps; });
    if (!padded) {
        for (int64_t step = 0; step < steps; ++step) {
            schedule.active[step] = batch;
            schedule.base[step] = (reverse ? steps - 1 - step : step) * batch;
        }
        schedule.rows = steps * batch;
        return schedule;
    }
    schedule.order = at::empty({batch}, at::kLong);
    int64_t* order = schedule.order.data_ptr<int64_t>();
    std::iota(order, order + batch, int64_t{0});
    std::stable_sort(order, order + batch, [&](int64_t a, int64_t b) { return length[a] > length[b]; });
    for (int64_t step = 0, running = batch; step < steps; ++step) {
        while (running > 0 && length[order[running - 1]] <= step) --running;
        schedule.active[step] = running;
        schedule.base[step] = schedule.rows;
        schedule.rows += running;
    }
    schedule.positions = at::empty({schedule.rows}, at::kLong);
    int64_t* position = schedule.positions.data_ptr<int64_t>();
    for (int64_t step = 0; step < steps; ++step) {
        for (int64_t k = 0; k < schedule.active[step]; ++k) {
            const int64_t b = order[k];
            position[schedule.base[step] + k] = rnn_step_time(step, length[b], reverse) * batch + b;
        }
    }
    return schedule;
}

// Rows a step's product through weight_hh runs on: its `active` running rows rounded up to a multiple of 16, within
// `available` rows (the buffer's). The extra rows (rows that have ended, in run order: a state kept, or in the
// backward the next steps' gate gradients) are computed and never read. The rounding keeps the products' shapes few:
// oneDNN creates a primitive for each shape it meets (cached, 1,024 by default), about 0.35 ms each here, and with
// a row count that followed each step's running rows, the cpu LSTM layer on 80 of the g2p trainer's length-bucketed
// batches met 452 new shapes where it had met 40 (2026-12-06, AMD EPYC with AVX-512).
inline int64_t product_rows(int64_t active, int64_t available) {
    constexpr int64_t kQuantum = 16;
    return std::min(available, (active + kQuantum - 1) / kQuantum * kQuantum);
}

// The rows of a padded [T * B, W] tensor in the schedule's buffer order ([rows, W]).
inline Tensor schedule_rows(const Tensor& flat, const RnnSchedule& schedule) {
    return schedule.positions.defined() ? flat.index_select(0, schedule.positions) : flat;
}

// A [rows, W] tensor in buffer order put back at its padded positions ([T * B, W], zero at padded ones).
inline Tensor padded_rows(const Tensor& rows, const RnnSchedule& schedule, int64_t positions) {
    if (!schedule.positions.defined()) return rows;
    return at::zeros({positions, rows.size(1)}, rows.options()).index_copy_(0, schedule.positions, rows);
}

// A [B, W] state in run order (a contiguous copy, advanced in place by the layer).
inline Tensor schedule_state(const Tensor& state, const RnnSchedule& schedule) {
    return schedule.order.defined() ? state.index_select(0, schedule.order) : state.contiguous().clone();
}

// The gradient of a layer's initial state: `through_step0` ([>= active[0], W], run order: what reached h before the
// first step through weight_hh) for the rows that ran a step, `carried` ([B, W], batch order: updated in place and
// returned) for the others, plus `carried` for all when `add` (a GRU's h also bypasses weight_hh).
inline Tensor initial_state_grad(Tensor carried, const Tensor& through_step0, const RnnSchedule& schedule, bool add) {
    const int64_t ran = schedule.active.empty() ? 0 : schedule.active[0];
    if (ran == 0) return carried;
    const Tensor reached = through_step0.narrow(0, 0, ran);
    if (!schedule.order.defined()) return add ? carried.add_(reached) : reached;  // every row ran
    const Tensor rows = schedule.order.narrow(0, 0, ran);
    return add ? carried.index_add_(0, rows, reached) : carried.index_copy_(0, rows, reached);
}

// A [B, W] tensor in run order put back in batch order.
inline Tensor batch_order(const Tensor& run_ordered, const RnnSchedule& schedule) {
    if (!schedule.order.defined()) return run_ordered;
    return at::empty_like(run_ordered).index_copy_(0, schedule.order, run_ordered);
}

// h before each step of each running row, in buffer order ([rows, H]): the row's output at its previous time, or hx
// at its first step.
template <typename T>
inline void previous_hidden(const Tensor& output, const Tensor& hx, const RnnSchedule& schedule,
                            const int64_t* lengths, bool reverse, Tensor& into) {
    const int64_t steps = output.size(0), batch = output.size(1), hidden = output.size(2);
    const int64_t* order = schedule.order_ptr();
    const T* out = output.data_ptr<T>();
    const T* initial = hx.data_ptr<T>();
    T* prev = into.data_ptr<T>();
    at::parallel_for(0, steps, 1, [&](int64_t begin, int64_t end) {
        for (int64_t step = begin; step < end; ++step) {
            for (int64_t k = 0; k < schedule.active[step]; ++k) {
                const int64_t b = rnn_row(order, k);
                const int64_t t = rnn_step_time(step, lengths != nullptr ? lengths[b] : steps, reverse);
                const T* source = step == 0 ? initial + b * hidden
                                            : out + ((reverse ? t + 1 : t - 1) * batch + b) * hidden;
                std::memcpy(prev + (schedule.base[step] + k) * hidden, source, sizeof(T) * hidden);
            }
        }
    });
}

// h before each step of a sequence every row runs in full (into [T, B, H]): output at the step before, or initial.
inline void previous_steps(const Tensor& output, const Tensor& initial, Tensor& into) {
    const int64_t steps = output.size(0);
    if (steps == 0) return;
    into[0].copy_(initial);
    into.narrow(0, 1, steps - 1).copy_(output.narrow(0, 0, steps - 1));
}

}  // namespace s2s_fast::cpu
