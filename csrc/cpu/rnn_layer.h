// What the CPU RNN layers (lstm_layer.h, gru_layer.h) share: which time a row runs at each step.
//
// One direction of one layer over a padded time-major sequence: row b runs steps 0..lengths[b]-1, forward from time
// 0 or (reverse) backward from time lengths[b]-1; its output is zero past its end and its state stays as it was
// after its last valid step.
//
// The rows run in an order (rnn_layer_binding.h: RnnSchedule) in which those still running at step s are the first
// `active` of it: a step kernel handles run positions k < active, the row at k being order[k] (k itself without an
// order), and the layer's per-step buffers hold only running rows, step s's at rows base + k.
#pragma once

#include <algorithm>
#include <cstdint>

namespace s2s_fast::cpu {

// The time row b (of length `length`) runs at step `step`, or -1 once the row has ended: then `step` is a padded
// position of that row (step >= length), in either direction.
inline int64_t rnn_step_time(int64_t step, int64_t length, bool reverse) {
    if (step >= length) return -1;
    return reverse ? length - 1 - step : step;
}

// The batch row at run position k.
inline int64_t rnn_row(const int64_t* order, int64_t k) { return order != nullptr ? order[k] : k; }

// Rows per task of a step kernel over rows of `row_width` elements: enough work that small batches stay on one thread.
inline int64_t rnn_step_grain(int64_t row_width) {
    constexpr int64_t kWork = 1 << 14;
    return std::max<int64_t>(1, kWork / std::max<int64_t>(1, row_width));
}

}  // namespace s2s_fast::cpu
