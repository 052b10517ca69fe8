// Torch binding of the CPU teacher-forced attentional GRU decoder: the operators
// s2s_fast::cpu_gru_attention_decoder_fwd/_bwd (a fragment of the s2s_fast library), the GRU counterpart of
// lstm_attention_decoder.cpp (s2s_fast.functional.gru_attention_decoder):
//
//   x_t = [input_t; feed_{t-1}]           h_t = GRU cell(x_t, h_{t-1})
//   then attention_decoder.h's readout of h_t: feed_t = output_t
//
// The GRU's input and hidden parts stay apart (n = tanh(x_n + r * (h_n + b_hn))), so each step takes two products:
// feed_{t-1} @ weight_ih's feed columns^T, added to the input part of the step's gates (the embedded input's part of
// every step's gates is one product before the loop), and h_{t-1} @ weight_hh^T; then the GRU layer's step kernel
// (gru_layer_kernels.h). The backward runs the steps in reverse with the same kernels, and computes the input gradient
// and every weight gradient in one product each over all steps. Fake implementations and the autograd formula are
// registered from Python (s2s_fast/cpu/gru_attention_decoder.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "attention_decoder.h"
#include "gru_layer.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

constexpr const char* kOp = "cpu_gru_attention_decoder";

DecoderSizes check_inputs(const Tensor& input, const Tensor& hx, const Tensor& feed, const Tensor& weight_ih,
                          const Tensor& weight_hh, const Tensor& query_weight, const Tensor& key_proj,
                          const Tensor& v, const Tensor& values, const std::optional<Tensor>& mask,
                          const Tensor& combine_weight, const std::optional<Tensor>& dropout_mask) {
    return check_decoder(kOp, 3, input, hx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values, mask,
                         combine_weight, dropout_mask);
}

// weight_ih's feed columns: [3H, H].
Tensor feed_weight(const Tensor& weight_ih, const DecoderSizes& s) { return weight_ih.narrow(1, s.embed, s.hidden); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
gru_attention_decoder_fwd_cpu(const Tensor& input, const Tensor& hx, const Tensor& feed, const Tensor& weight_ih,
                              const Tensor& weight_hh, const std::optional<Tensor>& bias_ih,
                              const std::optional<Tensor>& bias_hh, const Tensor& query_weight,
                              const Tensor& key_proj, const Tensor& v, const Tensor& values,
                              const std::optional<Tensor>& mask, const Tensor& combine_weight,
                              const std::optional<Tensor>& dropout_mask, bool save) {
    const DecoderSizes s = check_inputs(input, hx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values,
                                        mask, combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 3 * s.hidden;
    const auto options = input.options();
    // bias_ih, and bias_hh's r and z parts, join the input part; its n part is added to h_n inside r * (h_n + b_hn),
    // as in the GRU layer.
    std::optional<Tensor> bias;
    Tensor bias_hn;
    if (bias_ih) {
        check_tensor(kOp, *bias_ih, "bias_ih", {G}, input);
        bias = *bias_ih;
    }
    if (bias_hh) {
        check_tensor(kOp, *bias_hh, "bias_hh", {G}, input);
        const Tensor rz = at::cat({bias_hh->narrow(0, 0, 2 * H), at::zeros({H}, options)});
        bias = bias ? *bias + rz : rz;
        bias_hn = bias_hh->narrow(0, 2 * H, H).contiguous();
    }
    // The embedded input's part of every step's gates in one product; each step adds its feed's part in place.
    Tensor input_gates =
        Product(weight_ih.narrow(1, 0, s.embed).t())(input.reshape({T * B, s.embed}), bias).view({T, B, G});
    Tensor gates = at::empty({save ? T : 0, B, 4 * H}, options);
    Tensor hidden = at::empty({T, B, H}, options);  // h_t: the step kernel's output
    Tensor hidden_gates = at::empty({B, G}, options);
    Tensor h = hx.contiguous().clone();
    const Product feed_product(feed_weight(weight_ih, s).t(), /*repeated=*/T > 1);
    const Product hidden_product = step_product(weight_hh, B, T);
    Tensor output, weights, query_proj, joined, activated;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_gru_attention_decoder_fwd", [&] {
        ReadoutForward<scalar_t> readout(s, query_weight, key_proj, v, values, mask, combine_weight, dropout_mask,
                                         save, options);
        GruStepForwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, input_gates.data_ptr<scalar_t>(), hidden_gates.data_ptr<scalar_t>(),
            bias_hn.defined() ? bias_hn.data_ptr<scalar_t>() : nullptr, h.data_ptr<scalar_t>(),
            hidden.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr, nullptr, B, 0};
        for (int64_t t = 0; t < T; ++t) {
            input_gates[t].add_(feed_product(t == 0 ? feed : readout.output[t - 1]));
            hidden_product.out(hidden_gates, h);
            cell.step = t;
            cell.base = t * B;
            run_gru_step_fwd(cell);
            readout.step(t, hidden[t]);
        }
        output = readout.output;
        weights = readout.weights;
        query_proj = readout.kept(readout.query_proj);
        joined = readout.kept(readout.joined);
        activated = readout.activated;
    });
    return {output, h, weights, gates, save ? hidden : hidden.narrow(0, 0, 0), query_proj, joined, activated};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
gru_attention_decoder_bwd_cpu(const Tensor& grad_output, const Tensor& grad_hy,
                              const std::optional<Tensor>& grad_weights, const Tensor& input, const Tensor& hx,
                              const Tensor& feed, const Tensor& weight_ih, const Tensor& weight_hh,
                              const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                              const Tensor& values, const Tensor& combine_weight,
                              const std::optional<Tensor>& dropout_mask, const Tensor& output, const Tensor& weights,
                              const Tensor& gates, const Tensor& hidden, const Tensor& query_proj,
                              const Tensor& joined, const Tensor& activated) {
    const DecoderSizes s = check_inputs(input, hx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values,
                                        std::nullopt, combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 3 * s.hidden;
    check_tensor(kOp, grad_hy, "grad_hy", {B, H}, input);
    check_tensor(kOp, gates, "gates", {T, B, 4 * H}, input);
    check_tensor(kOp, hidden, "hidden", {T, B, H}, input);
    check_tensor(kOp, output, "output", {T, B, H}, input);
    const auto options = input.options();
    const Tensor gates_c = gates.contiguous(), hidden_c = hidden.contiguous(), hx_c = hx.contiguous();
    Tensor grad_input_gates = at::empty({T, B, G}, options);
    Tensor grad_hidden_gates = at::empty({T, B, G}, options);
    // Each read by each step's product and by two (the input gates') or one (the hidden gates') after the steps.
    LeftRows input_gate_rows(grad_input_gates.view({T * B, G})), hidden_gate_rows(grad_hidden_gates.view({T * B, G}));
    Tensor grad_hidden = at::empty({T, B, H}, options);  // the readout's share of the gradient of each h_t
    Tensor dh = grad_hy.contiguous().clone();  // what bypasses weight_hh (the kernel's carry)
    const Product feed_back(feed_weight(weight_ih, s), /*repeated=*/T > 1);
    const Product hidden_back(weight_hh, /*repeated=*/T > 1);
    Tensor recurrent;  // [B, H]: grad_hidden_gates of step t + 1 @ weight_hh
    Tensor carried;    // [B, H]: the gradient of feed_t through step t + 1's input gates
    ReadoutGradients readout_grads;
    // The state before each step (the initial one, then the previous step's), for the weight gradients.
    Tensor feed_before = at::empty({T, B, H}, options), hidden_before = at::empty({T, B, H}, options);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_gru_attention_decoder_bwd", [&] {
        ReadoutBackward<scalar_t> readout(kOp, s, grad_output, grad_weights, query_weight, key_proj, v, values,
                                          combine_weight, dropout_mask, output, weights, query_proj, joined,
                                          activated, input);
        GruStepBackwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, grad_hidden.data_ptr<scalar_t>(), nullptr, gates_c.data_ptr<scalar_t>(),
            hidden_c.data_ptr<scalar_t>(), hx_c.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
            grad_input_gates.data_ptr<scalar_t>(), grad_hidden_gates.data_ptr<scalar_t>(), nullptr, B, 0};
        for (int64_t t = T - 1; t >= 0; --t) {
            Tensor grad_hidden_t = grad_hidden[t];
            readout.step(t, carried, grad_hidden_t);
            cell.step = t;
            cell.base = t * B;
            cell.recurrent = t == T - 1 ? nullptr : recurrent.data_ptr<scalar_t>();
            run_gru_step_bwd(cell);
            recurrent = hidden_back(hidden_gate_rows, t * B, B);
            carried = feed_back(input_gate_rows, t * B, B);
        }
        readout_grads = readout.gradients(hidden);
        previous_steps(output, feed, feed_before);
        previous_steps(hidden_c, hx_c, hidden_before);
    });
    if (T == 0) {  // contiguous, as the fake's: zeros_like and clone would keep a transposed argument's strides
        return {at::zeros(input.sizes(), options), grad_hy.clone(at::MemoryFormat::Contiguous),
                at::zeros(feed.sizes(), options), at::zeros(weight_ih.sizes(), options),
                at::zeros(weight_hh.sizes(), options), at::zeros({G}, options), at::zeros({G}, options),
                readout_grads.query_weight, readout_grads.key_proj, readout_grads.v, readout_grads.values,
                readout_grads.combine_weight, readout_grads.dropout_mask};
    }
    // Every weight's gradient in one product over all steps: x_t = [input_t | feed_{t-1}], and h_{t-1}.
    const Tensor step_inputs = at::cat({input, feed_before}, 2).view({T * B, s.embed + H});
    const Tensor flat_input_grad = grad_input_gates.view({T * B, G});
    const Tensor flat_hidden_grad = grad_hidden_gates.view({T * B, G});
    const Tensor grad_input = Product(weight_ih.narrow(1, 0, s.embed))(input_gate_rows).view({T, B, s.embed});
    return {grad_input,
            dh + recurrent,
            carried,
            weight_gradient(input_gate_rows, step_inputs, false),
            weight_gradient(hidden_gate_rows, hidden_before.view({T * B, H}), false),
            flat_input_grad.sum(0),
            flat_hidden_grad.sum(0),
            readout_grads.query_weight,
            readout_grads.key_proj,
            readout_grads.v,
            readout_grads.values,
            readout_grads.combine_weight,
            readout_grads.dropout_mask};
}

}  // namespace
}  // namespace s2s_fast::cpu

TORCH_LIBRARY_FRAGMENT(s2s_fast, m) {
    m.def(
        "cpu_gru_attention_decoder_fwd(Tensor input, Tensor hx, Tensor feed, Tensor weight_ih, Tensor weight_hh, "
        "Tensor? bias_ih, Tensor? bias_hh, Tensor query_weight, Tensor key_proj, Tensor v, Tensor values, "
        "Tensor? mask, Tensor combine_weight, Tensor? dropout_mask, bool save) -> (Tensor output, Tensor hy, "
        "Tensor weights, Tensor gates, Tensor hidden, Tensor query_proj, Tensor joined, Tensor activated)");
    m.def(
        "cpu_gru_attention_decoder_bwd(Tensor grad_output, Tensor grad_hy, Tensor? grad_weights, Tensor input, "
        "Tensor hx, Tensor feed, Tensor weight_ih, Tensor weight_hh, Tensor query_weight, Tensor key_proj, "
        "Tensor v, Tensor values, Tensor combine_weight, Tensor? dropout_mask, Tensor output, Tensor weights, "
        "Tensor gates, Tensor hidden, Tensor query_proj, Tensor joined, Tensor activated) -> (Tensor grad_input, "
        "Tensor grad_hx, Tensor grad_feed, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, "
        "Tensor grad_bias_hh, Tensor grad_query_weight, Tensor grad_key_proj, Tensor grad_v, Tensor grad_values, "
        "Tensor grad_combine_weight, Tensor grad_dropout_mask)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_gru_attention_decoder_fwd", &s2s_fast::cpu::gru_attention_decoder_fwd_cpu);
    m.impl("cpu_gru_attention_decoder_bwd", &s2s_fast::cpu::gru_attention_decoder_bwd_cpu);
}
