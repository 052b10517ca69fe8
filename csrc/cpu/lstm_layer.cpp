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
    const RnnSchedule schedule = rnn_schedule(lengths_c, batch, steps, reverse);
    const int64_t positions = steps * batch, rows = schedule.rows;
    const Tensor x_rows = schedule_rows(input.reshape({positions, input_size}), schedule);
    // The single input product takes weight_ih as it is (copying it transposed cost more than it saved). A call that
    // keeps nothing for a backward (inference) keeps its packed bfloat16 weights for the next (KeptWeights).
    const Product per_step = step_product(weight_hh, batch, steps, /*across_calls=*/!save);
    // The input part of every running row's gates in one product; when the gates are kept for the backward, straight
    // into their buffer, where each step's kernel overwrites its rows' pre-activations with the activations once it
    // has read them. The kept buffers have the padded shape [T, B, *]; their rows past `rows` are zeroed (never read;
    // the same bits on every run).
    Tensor gates = at::empty({save ? steps : 0, batch, 4 * hidden}, input.options());
    Tensor cells = at::empty({save ? steps : 0, batch, hidden}, input.options());
    Tensor input_gates = save ? gates : at::empty({steps, batch, 4 * hidden}, input.options());
    {
        Tensor gate_rows = input_gates.view({positions, 4 * hidden}).narrow(0, 0, rows);
        Product(weight_ih.t(), /*repeated=*/false, /*across_calls=*/!save).out(gate_rows, x_rows, bias);
    }
    if (save && rows < positions) {
        gates.view({positions, 4 * hidden}).narrow(0, rows, positions - rows).zero_();
        cells.view({positions, hidden}).narrow(0, rows, positions - rows).zero_();
    }
    // The state in run order; the output zero where no row runs.
    Tensor h = schedule_state(hx, schedule), c = schedule_state(cx, schedule);
    Tensor output = rows < positions ? at::zeros({steps, batch, hidden}, input.options())
                                     : at::empty({steps, batch, hidden}, input.options());
    Tensor hidden_gates = at::empty({batch, 4 * hidden}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_layer_fwd", [&] {
        LstmStepForwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr, reverse,
            input_gates.data_ptr<scalar_t>(), hidden_gates.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
            c.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr,
            save ? cells.data_ptr<scalar_t>() : nullptr, schedule.order_ptr(), 0, 0};
        for (int64_t step = 0; step < steps && schedule.active[step] > 0; ++step) {
            params.step = step;
            params.active = schedule.active[step];
            params.base = schedule.base[step];
            const int64_t product = product_rows(params.active, batch);
            Tensor running = hidden_gates.narrow(0, 0, product);
            per_step.out(running, h.narrow(0, 0, product));
            run_lstm_step_fwd(params);
        }
    });
    return {output, batch_order(h, schedule), batch_order(c, schedule), gates, cells};
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
    const RnnSchedule schedule = rnn_schedule(lengths_c, batch, steps, reverse);
    const int64_t positions = steps * batch, rows = schedule.rows;
    const Tensor grad_output_c = grad_output.contiguous(), gates_c = gates.contiguous(), cells_c = cells.contiguous();
    const Tensor output_c = output.contiguous(), hx_c = hx.contiguous(), cx_c = cx.contiguous();
    Tensor dh = grad_hy.contiguous().clone(), dc = grad_cy.contiguous().clone();
    Tensor grad_gates = at::empty({rows, 4 * hidden}, input.options());
    LeftRows gate_rows(grad_gates);  // read by each step's product and by the three products after the steps
    Tensor recurrent = at::empty({batch, hidden}, input.options());
    Tensor previous = at::empty({rows, hidden}, input.options());
    const Product recurrent_product(weight_hh, /*repeated=*/steps > 1);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_layer_bwd", [&] {
        LstmStepBackwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_ptr, reverse, grad_output_c.data_ptr<scalar_t>(), nullptr,
            gates_c.data_ptr<scalar_t>(), cells_c.data_ptr<scalar_t>(), cx_c.data_ptr<scalar_t>(),
            dh.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(), schedule.order_ptr(),
            0, 0, 0};
        for (int64_t step = steps - 1; step >= 0; --step) {
            if (schedule.active[step] == 0) continue;
            params.step = step;
            params.active = schedule.active[step];
            params.base = schedule.base[step];
            params.previous_base = step > 0 ? schedule.base[step - 1] : 0;
            params.recurrent = step == steps - 1 ? nullptr : recurrent.data_ptr<scalar_t>();
            run_lstm_step_bwd(params);
            const int64_t product = product_rows(params.active, std::min(batch, rows - params.base));
            Tensor running = recurrent.narrow(0, 0, product);
            recurrent_product.out(running, gate_rows, params.base, product);
        }
        previous_hidden<scalar_t>(output_c, hx_c, schedule, lengths_ptr, reverse, previous);
    });
    // The gradient of hx: through step 0 for the rows that ran it, the final state's for empty rows.
    const Tensor grad_hx = initial_state_grad(dh, recurrent, schedule, /*add=*/false);
    const Tensor grad_input = padded_rows(Product(weight_ih)(gate_rows), schedule, positions).view(input.sizes());
    const Tensor grad_weight_ih = weight_gradient(gate_rows, schedule_rows(input.reshape({positions, input_size}),
                                                                           schedule));
    const Tensor grad_weight_hh = weight_gradient(gate_rows, previous);
    const Tensor grad_bias = grad_gates.sum(0);
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
