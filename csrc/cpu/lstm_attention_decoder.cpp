// Torch binding of the CPU teacher-forced attentional LSTM decoder: the operators
// s2s_fast::cpu_lstm_attention_decoder_fwd/_bwd (a fragment of the s2s_fast library). One LSTM layer with input feeding
// and additive attention, the whole target sequence in one call (s2s_fast.functional.lstm_attention_decoder):
//
//   x_t = [input_t; feed_{t-1}]           h_t, c_t = LSTM cell(x_t, h_{t-1}, c_{t-1})
//   q_t = query_weight h_t                ctx_t, w_t = additive attention(q_t, key_proj, v, values, mask)
//   y_t = tanh(combine_weight [h_t; ctx_t])      feed_t = output_t = y_t * dropout_mask_t (or y_t)
//
// It runs the kernels of the LSTM layer (lstm_layer_kernels.h) and of the attention (additive_attention_kernels.h)
// step by step, so that what a decoder built from those ops pays per step around them goes: the input part of
// every step's gates is one product before the loop; the backward sums the attention's key, value and v gradients in
// place over the steps and computes the input gradient and every weight gradient in one product each over all steps
// (an op per step returns each step's share, which autograd then adds up). Products through products.h; the attention
// readout of each step, forward and backward, is attention_decoder.h's, which the GRU decoder shares.
// Fake implementations and the autograd formula are registered from Python (s2s_fast/cpu/lstm_attention_decoder.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "attention_decoder.h"
#include "lstm_layer.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

constexpr const char* kOp = "cpu_lstm_attention_decoder";

DecoderSizes check_inputs(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& feed,
                          const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& query_weight,
                          const Tensor& key_proj, const Tensor& v, const Tensor& values,
                          const std::optional<Tensor>& mask, const Tensor& combine_weight,
                          const std::optional<Tensor>& dropout_mask) {
    const DecoderSizes s = check_decoder(kOp, 4, input, hx, feed, weight_ih, weight_hh, query_weight, key_proj, v,
                                         values, mask, combine_weight, dropout_mask);
    check_tensor(kOp, cx, "cx", {s.batch, s.hidden}, input);
    return s;
}

// [weight_ih's feed columns | weight_hh]: [4H, 2H], the weight of the per-step product [feed_{t-1} | h_{t-1}].
Tensor recurrent_weight(const Tensor& weight_ih, const Tensor& weight_hh, const DecoderSizes& s) {
    return at::cat({weight_ih.narrow(1, s.embed, s.hidden), weight_hh}, 1);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
lstm_attention_decoder_fwd_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& feed,
                               const Tensor& weight_ih, const Tensor& weight_hh,
                               const std::optional<Tensor>& bias_ih, const std::optional<Tensor>& bias_hh,
                               const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                               const Tensor& values, const std::optional<Tensor>& mask,
                               const Tensor& combine_weight, const std::optional<Tensor>& dropout_mask, bool save) {
    const DecoderSizes s = check_inputs(input, hx, cx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values,
                                        mask, combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 4 * s.hidden;
    std::optional<Tensor> bias;
    for (const auto& [value, name] : {std::pair{bias_ih, "bias_ih"}, {bias_hh, "bias_hh"}}) {
        if (!value) continue;
        check_tensor(kOp, *value, name, {G}, input);
        bias = bias ? *bias + *value : *value;
    }
    const auto options = input.options();
    // The input part of every step's gates (and both biases) in one product; with `save` the step kernel overwrites
    // each position's pre-activations with the activations the backward reads, as the LSTM layer does.
    const Tensor input_gates =
        Product(weight_ih.narrow(1, 0, s.embed).t())(input.reshape({T * B, s.embed}), bias).view({T, B, G});
    const Tensor gates = save ? input_gates : at::empty({0, B, G}, options);
    Tensor cells = at::empty({save ? T : 0, B, H}, options);
    Tensor hidden = at::empty({T, B, H}, options);  // h_t: the step kernel's output
    Tensor state = at::cat({feed, hx}, 1);  // [feed_{t-1} | h_{t-1}]: [B, 2H]
    Tensor h = hx.contiguous().clone(), c = cx.contiguous().clone();
    const Product recurrent_product = step_product(recurrent_weight(weight_ih, weight_hh, s), B, T);
    Tensor output, weights, query_proj, joined, activated;
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_attention_decoder_fwd", [&] {
        ReadoutForward<scalar_t> readout(s, query_weight, key_proj, v, values, mask, combine_weight, dropout_mask,
                                         save, options);
        LstmStepForwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, input_gates.data_ptr<scalar_t>(), nullptr, h.data_ptr<scalar_t>(),
            c.data_ptr<scalar_t>(), hidden.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr,
            save ? cells.data_ptr<scalar_t>() : nullptr, nullptr, B, 0};
        for (int64_t t = 0; t < T; ++t) {
            const Tensor hidden_gates = recurrent_product(state);
            cell.step = t;
            cell.base = t * B;
            cell.hidden_gates = hidden_gates.data_ptr<scalar_t>();
            run_lstm_step_fwd(cell);
            readout.step(t, hidden[t]);
            state.narrow(1, 0, H).copy_(readout.output[t]);
            state.narrow(1, H, H).copy_(h);
        }
        output = readout.output;
        weights = readout.weights;
        query_proj = readout.kept(readout.query_proj);
        joined = readout.kept(readout.joined);
        activated = readout.activated;
    });
    return {output, h, c, weights, gates, cells, save ? hidden : hidden.narrow(0, 0, 0), query_proj, joined,
            activated};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
lstm_attention_decoder_bwd_cpu(const Tensor& grad_output, const Tensor& grad_hy, const Tensor& grad_cy,
                               const std::optional<Tensor>& grad_weights, const Tensor& input, const Tensor& hx,
                               const Tensor& cx, const Tensor& feed, const Tensor& weight_ih, const Tensor& weight_hh,
                               const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                               const Tensor& values, const Tensor& combine_weight,
                               const std::optional<Tensor>& dropout_mask, const Tensor& output,
                               const Tensor& weights, const Tensor& gates, const Tensor& cells, const Tensor& hidden,
                               const Tensor& query_proj, const Tensor& joined, const Tensor& activated) {
    const DecoderSizes s = check_inputs(input, hx, cx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values,
                                        std::nullopt, combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 4 * s.hidden;
    check_tensor(kOp, grad_hy, "grad_hy", {B, H}, input);
    check_tensor(kOp, grad_cy, "grad_cy", {B, H}, input);
    check_tensor(kOp, gates, "gates", {T, B, G}, input);
    check_tensor(kOp, cells, "cells", {T, B, H}, input);
    check_tensor(kOp, hidden, "hidden", {T, B, H}, input);
    check_tensor(kOp, output, "output", {T, B, H}, input);
    const auto options = input.options();
    const Tensor grad_hy_c = grad_hy.contiguous();
    const Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous(), cx_c = cx.contiguous();
    Tensor grad_gates = at::empty({T, B, G}, options);
    LeftRows gate_rows(grad_gates.view({T * B, G}));  // read by each step's product and by two after the steps
    Tensor grad_hidden = at::empty({T, B, H}, options);  // the whole gradient of each h_t
    Tensor no_carry = at::zeros({B, H}, options);  // the step kernel's carried dh: every step's is in grad_hidden
    Tensor dc = grad_cy.contiguous().clone();
    const Product recurrent_back(recurrent_weight(weight_ih, weight_hh, s), /*repeated=*/T > 1);
    Tensor carried;  // [B, 2H]: the gradient of [feed_t | h_t] through step t + 1's gates (grad_gates @ weight)
    ReadoutGradients readout_grads;
    // The state before each step (the initial one, then the previous step's), for the weight gradients.
    Tensor feed_before = at::empty({T, B, H}, options), hidden_before = at::empty({T, B, H}, options);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_attention_decoder_bwd", [&] {
        ReadoutBackward<scalar_t> readout(kOp, s, grad_output, grad_weights, query_weight, key_proj, v, values,
                                          combine_weight, dropout_mask, output, weights, query_proj, joined,
                                          activated, input);
        LstmStepBackwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, grad_hidden.data_ptr<scalar_t>(), nullptr, gates_c.data_ptr<scalar_t>(),
            cells_c.data_ptr<scalar_t>(), cx_c.data_ptr<scalar_t>(), no_carry.data_ptr<scalar_t>(),
            dc.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(), nullptr, B, 0, 0};
        for (int64_t t = T - 1; t >= 0; --t) {
            Tensor grad_hidden_t = grad_hidden[t];
            readout.step(t, t == T - 1 ? Tensor() : carried.narrow(1, 0, H), grad_hidden_t);
            grad_hidden_t.add_(t == T - 1 ? grad_hy_c : carried.narrow(1, H, H));
            cell.step = t;
            cell.base = t * B;
            cell.previous_base = (t - 1) * B;
            run_lstm_step_bwd(cell);
            carried = recurrent_back(gate_rows, t * B, B);
        }
        readout_grads = readout.gradients(hidden);
        previous_steps(output, feed, feed_before);
        previous_steps(hidden, hx, hidden_before);
    });
    if (T == 0) {  // contiguous, as the fake's: zeros_like and clone would keep a transposed argument's strides
        const auto fresh = at::MemoryFormat::Contiguous;
        return {at::zeros(input.sizes(), options), grad_hy.clone(fresh), grad_cy.clone(fresh),
                at::zeros(feed.sizes(), options), at::zeros(weight_ih.sizes(), options),
                at::zeros(weight_hh.sizes(), options), at::zeros({G}, options),
                readout_grads.query_weight, readout_grads.key_proj, readout_grads.v, readout_grads.values,
                readout_grads.combine_weight, readout_grads.dropout_mask};
    }
    // Every weight's gradient in one product over all steps: [x_t | h_{t-1}] = [input_t | feed_{t-1} | h_{t-1}].
    const Tensor step_inputs = at::cat({input, feed_before, hidden_before}, 2).view({T * B, s.embed + 2 * H});
    const Tensor flat_gates = grad_gates.view({T * B, G});
    const Tensor grad_weight_all = weight_gradient(gate_rows, step_inputs, false);  // [4H, E + 2H]
    const Tensor grad_input = Product(weight_ih.narrow(1, 0, s.embed))(gate_rows).view({T, B, s.embed});
    // Copies, each its own: at B = 1 a row of carried is contiguous already, and two outputs of one op must not
    // share storage (the schema says each is new; functionalization and Inductor's buffer reuse rely on it).
    return {grad_input,
            carried.narrow(1, H, H).clone(at::MemoryFormat::Contiguous),
            dc,
            carried.narrow(1, 0, H).clone(at::MemoryFormat::Contiguous),
            grad_weight_all.narrow(1, 0, s.embed + H).contiguous(),
            grad_weight_all.narrow(1, s.embed + H, H).contiguous(),
            flat_gates.sum(0),
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
        "cpu_lstm_attention_decoder_fwd(Tensor input, Tensor hx, Tensor cx, Tensor feed, Tensor weight_ih, "
        "Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, Tensor query_weight, Tensor key_proj, Tensor v, "
        "Tensor values, Tensor? mask, Tensor combine_weight, Tensor? dropout_mask, bool save) -> (Tensor output, "
        "Tensor hy, Tensor cy, Tensor weights, Tensor gates, Tensor cells, Tensor hidden, Tensor query_proj, "
        "Tensor joined, Tensor activated)");
    m.def(
        "cpu_lstm_attention_decoder_bwd(Tensor grad_output, Tensor grad_hy, Tensor grad_cy, Tensor? grad_weights, "
        "Tensor input, Tensor hx, Tensor cx, Tensor feed, Tensor weight_ih, Tensor weight_hh, Tensor query_weight, "
        "Tensor key_proj, Tensor v, Tensor values, Tensor combine_weight, Tensor? dropout_mask, Tensor output, "
        "Tensor weights, Tensor gates, Tensor cells, Tensor hidden, Tensor query_proj, Tensor joined, "
        "Tensor activated) -> (Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_feed, "
        "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias, Tensor grad_query_weight, "
        "Tensor grad_key_proj, Tensor grad_v, Tensor grad_values, Tensor grad_combine_weight, "
        "Tensor grad_dropout_mask)");
}

TORCH_LIBRARY_IMPL(s2s_fast, CPU, m) {
    m.impl("cpu_lstm_attention_decoder_fwd", &s2s_fast::cpu::lstm_attention_decoder_fwd_cpu);
    m.impl("cpu_lstm_attention_decoder_bwd", &s2s_fast::cpu::lstm_attention_decoder_bwd_cpu);
}
