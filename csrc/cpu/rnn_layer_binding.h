// Host-side helpers the CPU RNN layers' bindings (lstm_layer.cpp, gru_layer.cpp) share: argument checks and the
// hidden state before each step, which both backwards multiply with their gate gradients for grad weight_hh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <optional>

#include "products.h"

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

// The per-step products h @ weight_hh^T: through oneDNN with weight_hh itself (its linear weight, no copy) where they
// go there (onednn_serves, Product's rule), else through ATen with step_weight's operand.
inline Product step_product(const Tensor& weight_hh, int64_t batch, int64_t steps) {
    if (onednn_serves(weight_hh.scalar_type(), batch * weight_hh.size(1) * weight_hh.size(0))) {
        return Product(weight_hh.t(), /*repeated=*/steps > 1);
    }
    return Product(step_weight(weight_hh, batch, steps));
}

// h before each (time, row) the layer ran: the row's previous output, or hx at its first step. Padded positions
// (no gradient reaches them) get hx too, so every value is finite.
template <typename T>
inline void previous_hidden(const Tensor& output, const Tensor& hx, const int64_t* lengths, bool reverse,
                            Tensor& into) {
    const int64_t steps = output.size(0), batch = output.size(1), hidden = output.size(2);
    const T* out = output.data_ptr<T>();
    const T* initial = hx.data_ptr<T>();
    T* prev = into.data_ptr<T>();
    at::parallel_for(0, steps * batch, 64, [&](int64_t begin, int64_t end) {
        for (int64_t pos = begin; pos < end; ++pos) {
            const int64_t t = pos / batch, b = pos - t * batch;
            const int64_t length = lengths != nullptr ? lengths[b] : steps;
            const int64_t before = reverse ? t + 1 : t - 1;
            const bool ran_before = t < length && before >= 0 && before < length;
            const T* source = ran_before ? out + (before * batch + b) * hidden : initial + b * hidden;
            std::memcpy(prev + pos * hidden, source, sizeof(T) * hidden);
        }
    });
}

}  // namespace s2s_fast::cpu
