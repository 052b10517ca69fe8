// Torch binding of the CPU GRU layer: the operators s2s_fast::cpu_gru_layer_fwd/_bwd (a fragment of the s2s_fast
// library). As for the LSTM layer (lstm_layer.cpp): the input part of every step's gates in one product before the
// loop, h @ weight_hh^T per step, and in the backward one product with weight_hh per step, then the input and weight
// gradients in one product each over all steps; the per-step pointwise work runs in gru_layer_kernels.h. Fake
// implementations and the autograd formula are registered from Python (s2s_fast/cpu/gru_layer.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "capability.h"
#include "gru_layer.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

constexpr const char* kOp = "cpu_gru_layer";

std::tuple<Tensor, Tensor, Tensor> gru_layer_fwd_cpu(const Tensor& input, const Tensor& hx, const Tensor& weight_ih,
                                                     const Tensor& weight_hh, const std::optional<Tensor>& bias_ih,
                                                     const std::optional<Tensor>& bias_hh,
                                                     const std::optional<Tensor>& lengths, bool reverse, bool save) {
    TORCH_CHECK(input.dim() == 3, "cpu_gru_layer_fwd: input must be [T, B, I], got ", input.sizes());
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                "cpu_gru_layer_fwd: float32 or float64 only, got ", input.scalar_type());
    const int64_t steps = input.size(0), batch = input.size(1), input_size = input.size(2);
    const int64_t hidden = hx.dim() == 2 ? hx.size(1) : -1;
    check_tensor(kOp, hx, "hx", {batch, hidden}, input);
    check_tensor(kOp, weight_ih, "weight_ih", {3 * hidden, input_size}, input);
    check_tensor(kOp, weight_hh, "weight_hh", {3 * hidden, hidden}, input);
    // bias_ih, and bias_hh's r and z parts, join the input part; its n part is added to h_n inside r * (h_n + b_hn).
    Tensor bias, bias_hn;
    if (bias_ih) {
        check_tensor(kOp, *bias_ih, "bias_ih", {3 * hidden}, input);
        bias = *bias_ih;
    }
    if (bias_hh) {
        check_tensor(kOp, *bias_hh, "bias_hh", {3 * hidden}, input);
        const Tensor rz = at::cat({bias_hh->narrow(0, 0, 2 * hidden), at::zeros({hidden}, input.options())});
        bias = bias.defined() ? bias + rz : rz;
        bias_hn = bias_hh->narrow(0, 2 * hidden, hidden).contiguous();
    }
    const std::optional<Tensor> lengths_c = checked_lengths(kOp, lengths, batch, steps);
    const RnnSchedule schedule = rnn_schedule(lengths_c, batch, steps, reverse);
    const int64_t positions = steps * batch, rows = schedule.rows;
    // The single input product (running rows only, rnn_layer_binding.h) takes weight_ih as it is (copying it
    // transposed cost more than it saved). A call that keeps nothing for a backward (inference) keeps its packed
    // bfloat16 weights for the next (KeptWeights).
    const Product per_step = step_product(weight_hh, batch, steps, /*across_calls=*/!save);
    const Tensor input_gates = Product(weight_ih.t(), /*repeated=*/false, /*across_calls=*/!save)(
        schedule_rows(input.reshape({positions, input_size}), schedule),
        bias.defined() ? std::optional<Tensor>(bias) : std::nullopt);
    // The state in run order; the output zero where no row runs; the kept gates' rows past `rows` zeroed (never read;
    // the same bits on every run).
    Tensor h = schedule_state(hx, schedule);
    Tensor output = rows < positions ? at::zeros({steps, batch, hidden}, input.options())
                                     : at::empty({steps, batch, hidden}, input.options());
    Tensor gates = at::empty({save ? steps : 0, batch, 4 * hidden}, input.options());
    if (save && rows < positions) gates.view({positions, 4 * hidden}).narrow(0, rows, positions - rows).zero_();
    Tensor hidden_gates = at::empty({batch, 3 * hidden}, input.options());
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_gru_layer_fwd", [&] {
        GruStepForwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr, reverse,
            input_gates.data_ptr<scalar_t>(), hidden_gates.data_ptr<scalar_t>(),
            bias_hn.defined() ? bias_hn.data_ptr<scalar_t>() : nullptr, h.data_ptr<scalar_t>(),
            output.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr, schedule.order_ptr(), 0, 0};
        for (int64_t step = 0; step < steps && schedule.active[step] > 0; ++step) {
            params.step = step;
            params.active = schedule.active[step];
            params.base = schedule.base[step];
            const int64_t product = product_rows(params.active, batch);
            Tensor running = hidden_gates.narrow(0, 0, product);
            per_step.out(running, h.narrow(0, 0, product));
            run_gru_step_fwd(params);
        }
    });
    return {output, batch_order(h, schedule), gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_bwd_cpu(
    const Tensor& grad_output, const Tensor& grad_hy, const Tensor& input, const Tensor& hx, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& lengths, bool reverse, const Tensor& output,
    const Tensor& gates) {
    TORCH_CHECK(input.dim() == 3 && hx.dim() == 2, "cpu_gru_layer_bwd: input must be [T, B, I] and hx [B, H]");
    const int64_t steps = input.size(0), batch = input.size(1), input_size = input.size(2), hidden = hx.size(1);
    check_tensor(kOp, grad_output, "grad_output", {steps, batch, hidden}, input);
    check_tensor(kOp, output, "output", {steps, batch, hidden}, input);
    check_tensor(kOp, grad_hy, "grad_hy", {batch, hidden}, input);
    check_tensor(kOp, hx, "hx", {batch, hidden}, input);
    check_tensor(kOp, weight_ih, "weight_ih", {3 * hidden, input_size}, input);
    check_tensor(kOp, weight_hh, "weight_hh", {3 * hidden, hidden}, input);
    check_tensor(kOp, gates, "gates", {steps, batch, 4 * hidden}, input);
    const std::optional<Tensor> lengths_c = checked_lengths(kOp, lengths, batch, steps);
    const int64_t* lengths_ptr = lengths_c ? lengths_c->data_ptr<int64_t>() : nullptr;
    const RnnSchedule schedule = rnn_schedule(lengths_c, batch, steps, reverse);
    const int64_t positions = steps * batch, rows = schedule.rows;
    const Tensor grad_output_c = grad_output.contiguous(), gates_c = gates.contiguous();
    const Tensor output_c = output.contiguous(), hx_c = hx.contiguous();
    Tensor dh = grad_hy.contiguous().clone();
    Tensor grad_input_gates = at::empty({rows, 3 * hidden}, input.options());
    Tensor grad_hidden_gates = at::empty({rows, 3 * hidden}, input.options());
    // Each read twice: the input gates' by the input and weight gradients, the hidden gates' by each step's product and
    // the weight gradient.
    LeftRows input_gate_rows(grad_input_gates), hidden_gate_rows(grad_hidden_gates);
    Tensor recurrent = at::zeros({batch, hidden}, input.options());
    Tensor previous = at::empty({rows, hidden}, input.options());
    const Product recurrent_product(weight_hh, /*repeated=*/steps > 1);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_gru_layer_bwd", [&] {
        GruStepBackwardParams<scalar_t> params{
            0, steps, batch, hidden, lengths_ptr, reverse, grad_output_c.data_ptr<scalar_t>(), nullptr,
            gates_c.data_ptr<scalar_t>(), output_c.data_ptr<scalar_t>(), hx_c.data_ptr<scalar_t>(),
            dh.data_ptr<scalar_t>(), grad_input_gates.data_ptr<scalar_t>(), grad_hidden_gates.data_ptr<scalar_t>(),
            schedule.order_ptr(), 0, 0};
        for (int64_t step = steps - 1; step >= 0; --step) {
            if (schedule.active[step] == 0) continue;
            params.step = step;
            params.active = schedule.active[step];
            params.base = schedule.base[step];
            params.recurrent = step == steps - 1 ? nullptr : recurrent.data_ptr<scalar_t>();
            run_gru_step_bwd(params);
            const int64_t product = product_rows(params.active, std::min(batch, rows - params.base));
            Tensor running = recurrent.narrow(0, 0, product);
            recurrent_product.out(running, hidden_gate_rows, params.base, product);
        }
        previous_hidden<scalar_t>(output_c, hx_c, schedule, lengths_ptr, reverse, previous);
    });
    // The gradient of hx: what bypassed weight_hh (dh), plus the flow through it at step 0 for rows that ran it.
    const Tensor grad_hx = initial_state_grad(dh, recurrent, schedule, /*add=*/true);
    const Tensor grad_input =
        padded_rows(Product(weight_ih)(input_gate_rows), schedule, positions).view(input.sizes());
    const Tensor grad_weight_ih =
        weight_gradient(input_gate_rows, schedule_rows(input.reshape({positions, input_size}), schedule));
    const Tensor grad_weight_hh = weight_gradient(hidden_gate_rows, previous);
    return {grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_input_gates.sum(0), grad_hidden_gates.sum(0)};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def(
        "cpu_gru_layer_fwd(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, Tensor? lengths, bool reverse, bool save) -> (Tensor output, Tensor hy, Tensor gates)");
    m.def(
        "cpu_gru_layer_bwd(Tensor grad_output, Tensor grad_hy, Tensor input, Tensor hx, Tensor weight_ih, "
        "Tensor weight_hh, Tensor? lengths, bool reverse, Tensor output, Tensor gates) -> (Tensor grad_input, "
        "Tensor grad_hx, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, Tensor grad_bias_hh)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_gru_layer_fwd", &s2s_fast::cpu::gru_layer_fwd_cpu);
    m.impl("cpu_gru_layer_bwd", &s2s_fast::cpu::gru_layer_bwd_cpu);
}
