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
// (an op per step returns each step's share, which autograd then adds up). Products through products.h.
// Fake implementations and the autograd formula are registered from Python (s2s_fast/cpu/lstm_attention_decoder.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "additive_attention.h"
#include "capability.h"
#include "lstm_layer.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {
namespace {

using at::Tensor;

constexpr const char* kOp = "cpu_lstm_attention_decoder";

struct Sizes {
    int64_t steps, batch, embed, hidden, keys, attn, value_size;
};

// The sizes of a call, after checking every tensor's device, dtype and shape against them.
Sizes check_inputs(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& feed,
                   const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& query_weight,
                   const Tensor& key_proj, const Tensor& v, const Tensor& values, const std::optional<Tensor>& mask,
                   const Tensor& combine_weight, const std::optional<Tensor>& dropout_mask) {
    TORCH_CHECK(input.dim() == 3, kOp, ": input must be [T, B, E], got ", input.sizes());
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, kOp,
                ": float32 or float64 only, got ", input.scalar_type());
    TORCH_CHECK(hx.dim() == 2 && key_proj.dim() == 3 && values.dim() == 3, kOp,
                ": hx must be [B, H], key_proj [B, S, A] and values [B, S, Dv]");
    const Sizes s{input.size(0), input.size(1), input.size(2), hx.size(1),
                  key_proj.size(1), key_proj.size(2), values.size(2)};
    check_tensor(kOp, hx, "hx", {s.batch, s.hidden}, input);
    check_tensor(kOp, cx, "cx", {s.batch, s.hidden}, input);
    check_tensor(kOp, feed, "feed", {s.batch, s.hidden}, input);
    check_tensor(kOp, weight_ih, "weight_ih", {4 * s.hidden, s.embed + s.hidden}, input);
    check_tensor(kOp, weight_hh, "weight_hh", {4 * s.hidden, s.hidden}, input);
    check_tensor(kOp, query_weight, "query_weight", {s.attn, s.hidden}, input);
    check_tensor(kOp, key_proj, "key_proj", {s.batch, s.keys, s.attn}, input);
    check_tensor(kOp, v, "v", {s.attn}, input);
    check_tensor(kOp, values, "values", {s.batch, s.keys, s.value_size}, input);
    check_tensor(kOp, combine_weight, "combine_weight", {s.hidden, s.hidden + s.value_size}, input);
    if (mask) {
        TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device().is_cpu(), kOp,
                    ": mask must be a bool CPU tensor");
        TORCH_CHECK(mask->sizes() == at::IntArrayRef({s.batch, s.keys}), kOp, ": mask must have shape [B, S] = [",
                    s.batch, ", ", s.keys, "], got ", mask->sizes());
    }
    if (dropout_mask) check_tensor(kOp, *dropout_mask, "dropout_mask", {s.steps, s.batch, s.hidden}, input);
    return s;
}

// [weight_ih's feed columns | weight_hh]: [4H, 2H], the weight of the per-step product [feed_{t-1} | h_{t-1}].
Tensor recurrent_weight(const Tensor& weight_ih, const Tensor& weight_hh, const Sizes& s) {
    return at::cat({weight_ih.narrow(1, s.embed, s.hidden), weight_hh}, 1);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>
lstm_attention_decoder_fwd_cpu(const Tensor& input, const Tensor& hx, const Tensor& cx, const Tensor& feed,
                               const Tensor& weight_ih, const Tensor& weight_hh,
                               const std::optional<Tensor>& bias_ih, const std::optional<Tensor>& bias_hh,
                               const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                               const Tensor& values, const std::optional<Tensor>& mask,
                               const Tensor& combine_weight, const std::optional<Tensor>& dropout_mask, bool save) {
    const Sizes s = check_inputs(input, hx, cx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values, mask,
                                 combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 4 * s.hidden;
    std::optional<Tensor> bias;
    for (const auto& [value, name] : {std::pair{bias_ih, "bias_ih"}, {bias_hh, "bias_hh"}}) {
        if (!value) continue;
        check_tensor(kOp, *value, name, {G}, input);
        bias = bias ? *bias + *value : *value;
    }
    const auto options = input.options();
    const int64_t kept = save ? T : 0;
    // The input part of every step's gates (and both biases) in one product; with `save` the step kernel overwrites
    // each position's pre-activations with the activations the backward reads, as the LSTM layer does.
    const Tensor input_gates =
        Product(weight_ih.narrow(1, 0, s.embed).t())(input.reshape({T * B, s.embed}), bias).view({T, B, G});
    const Tensor gates = save ? input_gates : at::empty({0, B, G}, options);
    Tensor cells = at::empty({kept, B, H}, options);
    Tensor hidden = at::empty({T, B, H}, options);  // h_t: the step kernel's output
    Tensor query_proj = at::empty({T, B, s.attn}, options);
    Tensor joined = at::empty({T, B, H + s.value_size}, options);  // [h_t | ctx_t]
    Tensor activated = at::empty({dropout_mask && save ? T : 0, B, H}, options);  // y_t before the dropout mask
    Tensor output = at::empty({T, B, H}, options);
    Tensor weights = at::empty({T, B, s.keys}, options);
    Tensor context = at::empty({B, s.value_size}, options);
    Tensor state = at::cat({feed, hx}, 1);  // [feed_{t-1} | h_{t-1}]: [B, 2H]
    Tensor h = hx.contiguous().clone(), c = cx.contiguous().clone();
    const Tensor key_c = key_proj.contiguous(), values_c = values.contiguous(), v_c = v.contiguous();
    const std::optional<Tensor> mask_c = mask ? std::optional<Tensor>(mask->contiguous()) : std::nullopt;
    const std::optional<Tensor> dropout_c =
        dropout_mask ? std::optional<Tensor>(dropout_mask->contiguous()) : std::nullopt;
    const Product recurrent_product = step_product(recurrent_weight(weight_ih, weight_hh, s), B, T);
    const Product query_product(query_weight.t(), /*repeated=*/T > 1);
    const Product combine_product(combine_weight.t(), /*repeated=*/T > 1);
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_attention_decoder_fwd", [&] {
        LstmStepForwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, input_gates.data_ptr<scalar_t>(), nullptr, h.data_ptr<scalar_t>(),
            c.data_ptr<scalar_t>(), hidden.data_ptr<scalar_t>(), save ? gates.data_ptr<scalar_t>() : nullptr,
            save ? cells.data_ptr<scalar_t>() : nullptr};
        AttentionForwardParams<scalar_t> attention{
            B, 1, s.keys, s.attn, s.value_size, nullptr, key_c.data_ptr<scalar_t>(), v_c.data_ptr<scalar_t>(),
            values_c.data_ptr<scalar_t>(), mask_c ? mask_c->data_ptr<bool>() : nullptr,
            context.data_ptr<scalar_t>(), nullptr, RowStrides{s.attn, s.attn}, RowStrides{s.keys * s.attn, s.attn},
            RowStrides{s.keys * s.value_size, s.value_size}};
        for (int64_t t = 0; t < T; ++t) {
            const Tensor hidden_gates = recurrent_product(state);
            cell.step = t;
            cell.hidden_gates = hidden_gates.data_ptr<scalar_t>();
            run_lstm_step_fwd(cell);
            const Tensor h_t = hidden[t];
            Tensor q_t = query_proj[t];
            q_t.copy_(query_product(h_t));
            attention.query_proj = q_t.data_ptr<scalar_t>();
            attention.weights = weights[t].data_ptr<scalar_t>();
            run_additive_attention_fwd(attention);
            Tensor joined_t = joined[t];
            joined_t.narrow(1, 0, H).copy_(h_t);
            joined_t.narrow(1, H, s.value_size).copy_(context);
            const Tensor combined = combine_product(joined_t);
            Tensor out_t = output[t];
            if (dropout_c) {
                Tensor y_t = save ? activated[t] : out_t;
                at::tanh_out(y_t, combined);
                at::mul_out(out_t, y_t, (*dropout_c)[t]);
            } else {
                at::tanh_out(out_t, combined);
            }
            state.narrow(1, 0, H).copy_(out_t);
            state.narrow(1, H, H).copy_(h);
        }
    });
    const auto keep = [&](const Tensor& all) { return save ? all : all.narrow(0, 0, 0); };
    return {output, h, c, weights, gates, cells, keep(hidden), keep(query_proj), keep(joined), activated};
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
    const Sizes s = check_inputs(input, hx, cx, feed, weight_ih, weight_hh, query_weight, key_proj, v, values,
                                 std::nullopt, combine_weight, dropout_mask);
    const int64_t T = s.steps, B = s.batch, H = s.hidden, G = 4 * s.hidden, J = s.hidden + s.value_size;
    check_tensor(kOp, grad_output, "grad_output", {T, B, H}, input);
    check_tensor(kOp, grad_hy, "grad_hy", {B, H}, input);
    check_tensor(kOp, grad_cy, "grad_cy", {B, H}, input);
    if (grad_weights) check_tensor(kOp, *grad_weights, "grad_weights", {T, B, s.keys}, input);
    check_tensor(kOp, output, "output", {T, B, H}, input);
    check_tensor(kOp, weights, "weights", {T, B, s.keys}, input);
    check_tensor(kOp, gates, "gates", {T, B, G}, input);
    check_tensor(kOp, cells, "cells", {T, B, H}, input);
    check_tensor(kOp, hidden, "hidden", {T, B, H}, input);
    check_tensor(kOp, query_proj, "query_proj", {T, B, s.attn}, input);
    check_tensor(kOp, joined, "joined", {T, B, J}, input);
    check_tensor(kOp, activated, "activated", {dropout_mask ? T : 0, B, H}, input);
    const auto options = input.options();
    Tensor grad_key = at::zeros({B, s.keys, s.attn}, options);
    Tensor grad_values = at::zeros({B, s.keys, s.value_size}, options);
    Tensor grad_v_partial = at::zeros({B, s.attn}, options);
    Tensor grad_dropout_mask = at::empty({dropout_mask ? T : 0, B, H}, options);
    if (T == 0) {
        return {at::zeros_like(input), grad_hy.clone(), grad_cy.clone(), at::zeros_like(feed),
                at::zeros_like(weight_ih), at::zeros_like(weight_hh), at::zeros({G}, options),
                at::zeros_like(query_weight), grad_key, grad_v_partial.sum(0), grad_values,
                at::zeros_like(combine_weight), grad_dropout_mask};
    }
    const Tensor grad_output_c = grad_output.contiguous(), grad_hy_c = grad_hy.contiguous();
    const std::optional<Tensor> grad_weights_c =
        grad_weights ? std::optional<Tensor>(grad_weights->contiguous()) : std::nullopt;
    const Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous(), cx_c = cx.contiguous();
    const Tensor query_c = query_proj.contiguous(), weights_c = weights.contiguous();
    const Tensor key_c = key_proj.contiguous(), values_c = values.contiguous(), v_c = v.contiguous();
    const Tensor activated_c = (dropout_mask ? activated : output).contiguous();
    const std::optional<Tensor> dropout_c =
        dropout_mask ? std::optional<Tensor>(dropout_mask->contiguous()) : std::nullopt;
    Tensor grad_gates = at::empty({T, B, G}, options);
    Tensor grad_combined = at::empty({T, B, H}, options);
    Tensor grad_query = at::empty({T, B, s.attn}, options);
    Tensor grad_hidden = at::empty({T, B, H}, options);  // the whole gradient of each h_t
    Tensor grad_context = at::empty({B, s.value_size}, options);
    Tensor no_carry = at::zeros({B, H}, options);  // the step kernel's carried dh: every step's is in grad_hidden
    Tensor dc = grad_cy.contiguous().clone();
    const bool repeated = T > 1;
    const Tensor recurrent = recurrent_weight(weight_ih, weight_hh, s);
    const Product recurrent_back(recurrent, repeated);  // grad_gates_t @ [W_feed | W_hh] -> [d feed | d h] of t-1
    const Product combine_back(combine_weight, repeated);
    const Product query_back(query_weight, repeated);
    Tensor carried;  // [B, 2H]: the gradient of [feed_t | h_t] through step t + 1's gates
    AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "cpu_lstm_attention_decoder_bwd", [&] {
        LstmStepBackwardParams<scalar_t> cell{
            0, T, B, H, nullptr, false, grad_hidden.data_ptr<scalar_t>(), nullptr, gates_c.data_ptr<scalar_t>(),
            cells_c.data_ptr<scalar_t>(), cx_c.data_ptr<scalar_t>(), no_carry.data_ptr<scalar_t>(),
            dc.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(), nullptr};
        AttentionBackwardParams<scalar_t> attention{
            B, 1, s.keys, s.attn, s.value_size, nullptr, key_c.data_ptr<scalar_t>(), v_c.data_ptr<scalar_t>(),
            values_c.data_ptr<scalar_t>(), nullptr, grad_context.data_ptr<scalar_t>(), nullptr, nullptr,
            grad_key.data_ptr<scalar_t>(), grad_values.data_ptr<scalar_t>(), grad_v_partial.data_ptr<scalar_t>(),
            RowStrides{s.attn, s.attn}, RowStrides{s.keys * s.attn, s.attn},
            RowStrides{s.keys * s.value_size, s.value_size}, /*accumulate=*/true};
        for (int64_t t = T - 1; t >= 0; --t) {
            // The gradient of feed_t = output_t: from the loss, and through the next step's input.
            Tensor grad_feed = t == T - 1 ? grad_output_c[t] : grad_output_c[t] + carried.narrow(1, 0, H);
            if (dropout_c) {
                Tensor grad_dropout_mask_t = grad_dropout_mask[t];
                at::mul_out(grad_dropout_mask_t, grad_feed, activated_c[t]);
                grad_feed = grad_feed * (*dropout_c)[t];
            }
            Tensor grad_combined_t = grad_combined[t];
            at::tanh_backward_out(grad_combined_t, grad_feed, activated_c[t]);
            const Tensor grad_joined = combine_back(grad_combined_t);  // [B, H + Dv]
            grad_context.copy_(grad_joined.narrow(1, H, s.value_size));
            Tensor grad_query_t = grad_query[t];
            attention.query_proj = query_c[t].data_ptr<scalar_t>();
            attention.weights = weights_c[t].data_ptr<scalar_t>();
            attention.grad_weights = grad_weights_c ? (*grad_weights_c)[t].data_ptr<scalar_t>() : nullptr;
            attention.grad_query = grad_query_t.data_ptr<scalar_t>();
            run_additive_attention_bwd(attention);
            Tensor grad_hidden_t = grad_hidden[t];
            at::add_out(grad_hidden_t, grad_joined.narrow(1, 0, H), query_back(grad_query_t));
            grad_hidden_t.add_(t == T - 1 ? grad_hy_c : carried.narrow(1, H, H));
            cell.step = t;
            run_lstm_step_bwd(cell);
            carried = recurrent_back(grad_gates[t]);
        }
    });
    // Every weight's gradient in one product over all steps: [x_t | h_{t-1}] = [input_t | feed_{t-1} | h_{t-1}].
    const Tensor previous_feed = at::cat({feed.unsqueeze(0), output.narrow(0, 0, T - 1)}, 0);
    const Tensor previous_hidden = at::cat({hx.unsqueeze(0), hidden.narrow(0, 0, T - 1)}, 0);
    const Tensor step_inputs = at::cat({input, previous_feed, previous_hidden}, 2).view({T * B, s.embed + 2 * H});
    const Tensor flat_gates = grad_gates.view({T * B, G});
    // The weight gradients through ATen (MKL): it reads the transposed gradients as they are, where oneDNN's linear
    // copied them first (12 MB for the g2p model's gates).
    const Tensor grad_weight_all = at::mm(flat_gates.t(), step_inputs);  // [4H, E + 2H]
    const Tensor grad_input =
        Product(weight_ih.narrow(1, 0, s.embed))(flat_gates).view({T, B, s.embed});
    const Tensor grad_combine_weight = at::mm(grad_combined.view({T * B, H}).t(), joined.reshape({T * B, J}));
    const Tensor grad_query_weight = at::mm(grad_query.view({T * B, s.attn}).t(), hidden.reshape({T * B, H}));
    return {grad_input,
            carried.narrow(1, H, H).contiguous(),
            dc,
            carried.narrow(1, 0, H).contiguous(),
            grad_weight_all.narrow(1, 0, s.embed + H).contiguous(),
            grad_weight_all.narrow(1, s.embed + H, H).contiguous(),
            flat_gates.sum(0),
            grad_query_weight,
            grad_key,
            grad_v_partial.sum(0),
            grad_values,
            grad_combine_weight,
            grad_dropout_mask};
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
