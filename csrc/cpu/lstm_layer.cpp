// Torch binding of the CPU LSTM layer: the operators s2s_fast::cpu_lstm_layer_fwd/_bwd (a fragment of the s2s_fast
// library). The matrix products run through ATen or oneDNN (products.h, on torch's CPU threads): the input part of
// every step's gates in one product before the loop, h @ weight_hh^T per step, and in the backward the gradient
// through weight_hh per step and the input and weight gradients in three products after the loop. The per-step pointwise
// work runs in the kernels of lstm_layer_kernels.h. Fake implementations and the autograd formula are registered
// from Python (s2s_fast/cpu/lstm_layer.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "capability.h"
#include "lstm_layer.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

constexpr const char* kOp = "cpu_lstm_layer";

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_fwd_cpu(
    const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh,
    const std::optional<Tensor>& bias_ih, const std::optional<Tensor>& bias_hh, const std::optional<Tensor>& lengths,
    bool reverse, bool save) {
    TORCH_CHECK(input.dim() == 3, "cpu_lstm_layer_fwd: input must be [T, B, I], got ", input.sizes());
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                "cpu_lstm_layer_fwd: float32 or float64 only, got ", input.scalar_type());
    const int64_t steps = input.size(0), batch = input.size(1), input_size = input.size(2);
    const int64_t hidden = hx.dim() == 2 ? hx.size(1) : -1;
    check_tensor(kOp, input, "input", input.sizes(), input);
    check_tensor(kOp, hx, "hx", {batch, hidden}, input);
    check_tensor(kOp, cx, "cx", {batch, hidden}, input);
    check_tensor(kOp, weight_ih, "weight_ih", {4 * hidden, input_size}, input);
    check_tensor(kOp, weight_hh, "weight_hh", {4 * hidden, hidden}, input);
    std::optional<Tensor> bias;
    for (const auto& [value, name] : {std::pair{bias_ih, "bias_ih"}, {bias_hh, "bias_hh"}}) {
        if (!value) continue;
        check_tensor(kOp, *value, name, {4 * hidden}, input);
        bias = bias ? *bias + *value : *value;
    }
    const std::optional<Tensor> lengths_c = checked_lengths(kOp, lengths, batch, steps);
    const Tensor flat = input.reshape({steps * batch, input_size});
    // The single input product takes weight_ih as it is (copying it transposed cost more than it saved).
    const Product per_step = step_product(weight_hh, batch, steps);
    // The input part of every step's gates in one product; when the gates are kept for the backward, straight into
    // their buffer, where each step's kernel overwrites its rows' pre-activations with the activations once it has
    // read them (a padded position it zeroes is a time its row never runs).
    Tensor gates = at::empty({save ? steps : 0, batch, 4 * hidden}, input.options());
    Tensor input_gates = save ? gates : at::empty({steps, batch, 4 * hidden}, input.options());
    {
        Tensor flat_gates = input_gates.view({steps * batch, 4 * hidden});
        Product(weight_ih.t()).out(flat_gates, flat, bias);
    }
    Tensor h = hx.contiguous().clone(), c = cx.contiguous().clone();
    Tensor output = at::empty({steps, batch, hidden}, input.options());
    Tensor cells = at::empty({save ? steps : 0, batch, hidden}, input.options());
    Tensor hidden_gates = at::empty({batch, 4 * hidden}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_layer_fwd", [&] {
        LstmStepForwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr, reverse,
            input_gates.data_ptr<scalar_t>(), hidden_gates.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
            c.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr,
            save ? cells.data_ptr<scalar_t>() : nullptr};
        for (int64_t step = 0; step < steps; ++step) {
            per_step.out(hidden_gates, h);
            params.step = step;
            run_lstm_step_fwd(params);
        }
    });
    return {output, h, c, gates, cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_bwd_cpu(
    const Tensor& grad_output, const Tensor& grad_hy, const Tensor& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& weight_ih, const Tensor& weight_hh, const std::optional<Tensor>& lengths,
    bool reverse, const Tensor& output, const Tensor& gates, const Tensor& cells) {
    TORCH_CHECK(input.dim() == 3 && hx.dim() == 2, "cpu_lstm_layer_bwd: input must be [T, B, I] and hx [B, H]");
    const int64_t steps = input.size(0), batch = input.size(1), input_size = input.size(2), hidden = hx.size(1);
    check_tensor(kOp, grad_output, "grad_output", {steps, batch, hidden}, input);
    check_tensor(kOp, output, "output", {steps, batch, hidden}, input);
    for (const auto& [value, name] : {std::pair{grad_hy, "grad_hy"}, {grad_cy, "grad_cy"}, {hx, "hx"}, {cx, "cx"}}) {
        check_tensor(kOp, value, name, {batch, hidden}, input);
    }
    check_tensor(kOp, weight_ih, "weight_ih", {4 * hidden, input_size}, input);
    check_tensor(kOp, weight_hh, "weight_hh", {4 * hidden, hidden}, input);
    check_tensor(kOp, gates, "gates", {steps, batch, 4 * hidden}, input);
    check_tensor(kOp, cells, "cells", {steps, batch, hidden}, input);
    const std::optional<Tensor> lengths_c = checked_lengths(kOp, lengths, batch, steps);
    const int64_t* lengths_ptr = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
    const Tensor grad_output_c = grad_output.contiguous(), gates_c = gates.contiguous(), cells_c = cells.contiguous();
    const Tensor output_c = output.contiguous(), hx_c = hx.contiguous(), cx_c = cx.contiguous();
    Tensor dh = grad_hy.contiguous().clone(), dc = grad_cy.contiguous().clone();
    Tensor grad_gates = at::empty({steps, batch, 4 * hidden}, input.options());
    // Without per-row lengths in reverse, a step's rows of grad_gates are one slice of it (rows that have ended sit
    // at their padded position, the step's own index); otherwise the kernel gathers them into a buffer of their own.
    const bool gathered = reverse && lengths_c.has_value();
    Tensor step_grad_gates = at::empty({gathered ? batch : 0, 4 * hidden}, input.options());
    Tensor recurrent = at::empty({batch, hidden}, input.options());
    Tensor previous = at::empty({steps, batch, hidden}, input.options());
    const Product recurrent_product(weight_hh, /*repeated=*/steps > 1);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_layer_bwd", [&] {
        LstmStepBackwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_ptr, reverse, grad_output_c.data_ptr<scalar_t>(), nullptr,
            gates_c.data_ptr<scalar_t>(), cells_c.data_ptr<scalar_t>(), cx_c.data_ptr<scalar_t>(),
            dh.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(),
            gathered ? step_grad_gates.data_ptr<scalar_t>() : nullptr};
        for (int64_t step = steps - 1; step >= 0; --step) {
            params.step = step;
            params.recurrent = step == steps - 1 ? nullptr : recurrent.data_ptr<scalar_t>();
            run_lstm_step_bwd(params);
            recurrent_product.out(recurrent,
                                  gathered ? step_grad_gates : grad_gates[reverse ? steps - 1 - step : step]);
        }
        previous_hidden<scalar_t>(output_c, hx_c, lengths_ptr, reverse, previous);
    });
    // The gradient of hx: through step 0 for the rows that ran it, the final state's for empty rows.
    Tensor grad_hx = dh;
    if (steps > 0) grad_hx = lengths_c ? at::where((*lengths_c > 0).unsqueeze(1), recurrent, dh) : recurrent;
    const Tensor flat_grad = grad_gates.view({steps * batch, 4 * hidden});
    const Tensor grad_input = Product(weight_ih)(flat_grad).view({steps, batch, input_size});
    const Tensor grad_weight_ih = weight_gradient(flat_grad, input.reshape({steps * batch, input_size}));
    const Tensor grad_weight_hh = weight_gradient(flat_grad, previous.view({steps * batch, hidden}));
    const Tensor grad_bias = flat_grad.sum(0);
    return {grad_input, grad_hx, dc, grad_weight_ih, grad_weight_hh, grad_bias};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def(
        "cpu_lstm_layer_fwd(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, Tensor? lengths, bool reverse, bool save) -> (Tensor output, Tensor hy, Tensor cy, "
        "Tensor gates, Tensor cells)");
    m.def(
        "cpu_lstm_layer_bwd(Tensor grad_output, Tensor grad_hy, Tensor grad_cy, Tensor input, Tensor hx, Tensor cx, "
        "Tensor weight_ih, Tensor weight_hh, Tensor? lengths, bool reverse, Tensor output, Tensor gates, "
        "Tensor cells) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_weight_ih, "
        "Tensor grad_weight_hh, Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_lstm_layer_fwd", &s2s_fast::cpu::lstm_layer_fwd_cpu);
    m.impl("cpu_lstm_layer_bwd", &s2s_fast::cpu::lstm_layer_bwd_cpu);
}
