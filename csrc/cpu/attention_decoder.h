// What the CPU attentional decoders (lstm_attention_decoder.cpp, gru_attention_decoder.cpp) share: the checks of the
// arguments they have in common, and each step's attention readout, forward and backward. After the RNN cell of step
// t gives h_t (from x_t = [input_t; feed_{t-1}]):
//
//   q_t = query_weight h_t          ctx_t, w_t = additive attention(q_t, key_proj, v, values, mask)
//   y_t = tanh(combine_weight [h_t; ctx_t])      feed_t = output_t = y_t * dropout_mask_t (or y_t)
//
// The backward of a step takes the gradient of feed_t through the next step's input and gives the readout's share of
// the gradient of h_t; it adds the attention's key, value and v gradients up in place over the steps (the attention
// kernel's `accumulate`), and the query and combining weights' gradients are one product each over all steps.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "additive_attention.h"
#include "products.h"
#include "rnn_layer_binding.h"

namespace s2s_fast::cpu {

struct DecoderSizes {
    int64_t steps, batch, embed, hidden, keys, attn, value_size;
};

// The gradients of the readout's own inputs, in the operators' order.
struct ReadoutGradients {
    Tensor query_weight, key_proj, v, values, combine_weight, dropout_mask;
};

inline std::optional<Tensor> contiguous_or_none(const std::optional<Tensor>& tensor) {
    return tensor ? std::optional<Tensor>(tensor->contiguous()) : std::nullopt;
}

// The sizes of a decoder call whose cell has `gates` gate blocks (4: LSTM, 3: GRU), after checking every argument the
// decoders share against them (an LSTM's cx is its own).
inline DecoderSizes check_decoder(const char* op, int64_t gates, const Tensor& input, const Tensor& hx,
                                  const Tensor& feed, const Tensor& weight_ih, const Tensor& weight_hh,
                                  const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                                  const Tensor& values, const std::optional<Tensor>& mask,
                                  const Tensor& combine_weight, const std::optional<Tensor>& dropout_mask) {
    TORCH_CHECK(input.dim() == 3, op, ": input must be [T, B, E], got ", input.sizes());
    TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble, op,
                ": float32 or float64 only, got ", input.scalar_type());
    TORCH_CHECK(hx.dim() == 2 && key_proj.dim() == 3 && values.dim() == 3, op,
                ": hx must be [B, H], key_proj [B, S, A] and values [B, S, Dv]");
    const DecoderSizes s{input.size(0), input.size(1), input.size(2), hx.size(1),
                         key_proj.size(1), key_proj.size(2), values.size(2)};
    check_tensor(op, hx, "hx", {s.batch, s.hidden}, input);
    check_tensor(op, feed, "feed", {s.batch, s.hidden}, input);
    check_tensor(op, weight_ih, "weight_ih", {gates * s.hidden, s.embed + s.hidden}, input);
    check_tensor(op, weight_hh, "weight_hh", {gates * s.hidden, s.hidden}, input);
    check_tensor(op, query_weight, "query_weight", {s.attn, s.hidden}, input);
    check_tensor(op, key_proj, "key_proj", {s.batch, s.keys, s.attn}, input);
    check_tensor(op, v, "v", {s.attn}, input);
    check_tensor(op, values, "values", {s.batch, s.keys, s.value_size}, input);
    check_tensor(op, combine_weight, "combine_weight", {s.hidden, s.hidden + s.value_size}, input);
    if (mask) {
        TORCH_CHECK(mask->scalar_type() == at::kBool && mask->device().is_cpu(), op,
                    ": mask must be a bool CPU tensor");
        TORCH_CHECK(mask->sizes() == at::IntArrayRef({s.batch, s.keys}), op, ": mask must have shape [B, S] = [",
                    s.batch, ", ", s.keys, "], got ", mask->sizes());
    }
    if (dropout_mask) check_tensor(op, *dropout_mask, "dropout_mask", {s.steps, s.batch, s.hidden}, input);
    return s;
}

// The readout of every step, forward. Keeps (with `save`) each step's query, [h_t | ctx_t] and, under a dropout mask,
// y_t before it, besides the outputs and attention weights it returns.
template <typename T>
class ReadoutForward {
   public:
    ReadoutForward(const DecoderSizes& s, const Tensor& query_weight, const Tensor& key_proj, const Tensor& v,
                   const Tensor& values, const std::optional<Tensor>& mask, const Tensor& combine_weight,
                   const std::optional<Tensor>& dropout_mask, bool save, const at::TensorOptions& options)
        : query_proj(at::empty({s.steps, s.batch, s.attn}, options)),
          joined(at::empty({s.steps, s.batch, s.hidden + s.value_size}, options)),
          activated(at::empty({dropout_mask && save ? s.steps : 0, s.batch, s.hidden}, options)),
          output(at::empty({s.steps, s.batch, s.hidden}, options)),
          weights(at::empty({s.steps, s.batch, s.keys}, options)),
          s_(s),
          save_(save),
          query_product_(query_weight.t(), /*repeated=*/s.steps > 1),
          combine_product_(combine_weight.t(), /*repeated=*/s.steps > 1),
          key_(key_proj.contiguous()),
          values_(values.contiguous()),
          v_(v.contiguous()),
          mask_(contiguous_or_none(mask)),
          dropout_(contiguous_or_none(dropout_mask)),
          context_(at::empty({s.batch, s.value_size}, options)),
          attention_{s.batch, 1, s.keys, s.attn, s.value_size, nullptr, key_.data_ptr<T>(), v_.data_ptr<T>(),
                     values_.data_ptr<T>(), mask_ ? mask_->data_ptr<bool>() : nullptr, context_.data_ptr<T>(),
                     nullptr, RowStrides{s.attn, s.attn}, RowStrides{s.keys * s.attn, s.attn},
                     RowStrides{s.keys * s.value_size, s.value_size}} {}

    // Step t's readout from h_t [B, H]: output[t] (= feed_t) and weights[t].
    void step(int64_t t, const Tensor& h_t) {
        Tensor q_t = query_proj[t];
        q_t.copy_(query_product_(h_t));
        attention_.query_proj = q_t.data_ptr<T>();
        attention_.weights = weights[t].data_ptr<T>();
        run_additive_attention_fwd(attention_);
        Tensor joined_t = joined[t];
        joined_t.narrow(1, 0, s_.hidden).copy_(h_t);
        joined_t.narrow(1, s_.hidden, s_.value_size).copy_(context_);
        const Tensor combined = combine_product_(joined_t);
        Tensor out_t = output[t];
        if (dropout_) {
            Tensor y_t = save_ ? activated[t] : out_t;
            at::tanh_out(y_t, combined);
            at::mul_out(out_t, y_t, (*dropout_)[t]);
        } else {
            at::tanh_out(out_t, combined);
        }
    }

    // What the backward reads: `all` with `save`, else none of its steps.
    Tensor kept(const Tensor& all) const { return save_ ? all : all.narrow(0, 0, 0); }

    Tensor query_proj, joined, activated, output, weights;

   private:
    DecoderSizes s_;
    bool save_;
    Product query_product_, combine_product_;
    Tensor key_, values_, v_;
    std::optional<Tensor> mask_, dropout_;
    Tensor context_;
    AttentionForwardParams<T> attention_;
};

// The readout of every step, backward, from the forward's outputs and what it kept.
template <typename T>
class ReadoutBackward {
   public:
    ReadoutBackward(const char* op, const DecoderSizes& s, const Tensor& grad_output,
                    const std::optional<Tensor>& grad_weights, const Tensor& query_weight, const Tensor& key_proj,
                    const Tensor& v, const Tensor& values, const Tensor& combine_weight,
                    const std::optional<Tensor>& dropout_mask, const Tensor& output, const Tensor& weights,
                    const Tensor& query_proj, const Tensor& joined, const Tensor& activated, const Tensor& like)
        : grad_key(at::zeros({s.batch, s.keys, s.attn}, like.options())),
          grad_values(at::zeros({s.batch, s.keys, s.value_size}, like.options())),
          grad_dropout_mask(at::empty({dropout_mask ? s.steps : 0, s.batch, s.hidden}, like.options())),
          s_(s),
          combine_back_(combine_weight, /*repeated=*/s.steps > 1),
          query_back_(query_weight, /*repeated=*/s.steps > 1),
          grad_output_(checked(op, grad_output, "grad_output", {s.steps, s.batch, s.hidden}, like)),
          grad_weights_(grad_weights ? std::optional<Tensor>(checked(op, *grad_weights, "grad_weights",
                                                                     {s.steps, s.batch, s.keys}, like))
                                     : std::nullopt),
          query_(checked(op, query_proj, "query_proj", {s.steps, s.batch, s.attn}, like)),
          weights_(checked(op, weights, "weights", {s.steps, s.batch, s.keys}, like)),
          // y_t: kept apart under a dropout mask, else the output itself
          activated_(dropout_mask ? checked(op, activated, "activated", {s.steps, s.batch, s.hidden}, like)
                                  : checked(op, output, "output", {s.steps, s.batch, s.hidden}, like)),
          joined_(checked(op, joined, "joined", {s.steps, s.batch, s.hidden + s.value_size}, like)),
          key_(key_proj.contiguous()),
          values_(values.contiguous()),
          v_(v.contiguous()),
          dropout_(contiguous_or_none(dropout_mask)),
          grad_combined_(at::empty({s.steps, s.batch, s.hidden}, like.options())),
          grad_query_(at::empty({s.steps, s.batch, s.attn}, like.options())),
          combined_rows_(grad_combined_.view({s.steps * s.batch, s.hidden})),
          query_rows_(grad_query_.view({s.steps * s.batch, s.attn})),
          grad_context_(at::empty({s.batch, s.value_size}, like.options())),
          grad_v_partial_(at::zeros({s.batch, s.attn}, like.options())),
          attention_{s.batch, 1, s.keys, s.attn, s.value_size, nullptr, key_.data_ptr<T>(), v_.data_ptr<T>(),
                     values_.data_ptr<T>(), nullptr, grad_context_.data_ptr<T>(), nullptr, nullptr,
                     grad_key.data_ptr<T>(), grad_values.data_ptr<T>(), grad_v_partial_.data_ptr<T>(),
                     RowStrides{s.attn, s.attn}, RowStrides{s.keys * s.attn, s.attn},
                     RowStrides{s.keys * s.value_size, s.value_size}, /*accumulate=*/true} {}

    // Step t: from the gradient of feed_t through step t + 1's input (undefined at the last step), the readout's
    // share of the gradient of h_t, written to grad_hidden [B, H].
    void step(int64_t t, const Tensor& grad_feed_next, Tensor& grad_hidden) {
        Tensor grad_feed = grad_feed_next.defined() ? grad_output_[t] + grad_feed_next : grad_output_[t];
        if (dropout_) {
            Tensor grad_dropout_mask_t = grad_dropout_mask[t];
            at::mul_out(grad_dropout_mask_t, grad_feed, activated_[t]);
            grad_feed = grad_feed * (*dropout_)[t];
        }
        Tensor grad_combined_t = grad_combined_[t];
        at::tanh_backward_out(grad_combined_t, grad_feed, activated_[t]);
        const Tensor grad_joined = combine_back_(combined_rows_, t * s_.batch, s_.batch);  // [B, H + Dv]
        grad_context_.copy_(grad_joined.narrow(1, s_.hidden, s_.value_size));
        Tensor grad_query_t = grad_query_[t];
        attention_.query_proj = query_[t].data_ptr<T>();
        attention_.weights = weights_[t].data_ptr<T>();
        attention_.grad_weights = grad_weights_ ? (*grad_weights_)[t].data_ptr<T>() : nullptr;
        attention_.grad_query = grad_query_t.data_ptr<T>();
        run_additive_attention_bwd(attention_);
        at::add_out(grad_hidden, grad_joined.narrow(1, 0, s_.hidden),
                    query_back_(query_rows_, t * s_.batch, s_.batch));
    }

    // After every step, given every step's h_t: the weights' gradients, each one product over all steps (in float32
    // through ATen: MKL reads the transposed gradients as they are, where oneDNN's linear copied them first), and
    // grad_v from the batch rows' shares added in a fixed order (the same bits on every run).
    ReadoutGradients gradients(const Tensor& hidden) {
        const int64_t rows = s_.steps * s_.batch;
        return {weight_gradient(query_rows_, hidden.reshape({rows, s_.hidden}), false),
                grad_key,
                grad_v_partial_.sum(0),
                grad_values,
                weight_gradient(combined_rows_, joined_.reshape({rows, s_.hidden + s_.value_size}), false),
                grad_dropout_mask};
    }

    Tensor grad_key, grad_values, grad_dropout_mask;

   private:
    static Tensor checked(const char* op, const Tensor& tensor, const char* name, at::IntArrayRef shape,
                          const Tensor& like) {
        check_tensor(op, tensor, name, shape, like);
        return tensor.contiguous();
    }

    DecoderSizes s_;
    Product combine_back_, query_back_;
    Tensor grad_output_;
    std::optional<Tensor> grad_weights_;
    Tensor query_, weights_, activated_, joined_, key_, values_, v_;
    std::optional<Tensor> dropout_;
    Tensor grad_combined_, grad_query_;
    // Their rows, each read by its step's product and by a weight gradient after the steps.
    LeftRows combined_rows_, query_rows_;
    Tensor grad_context_, grad_v_partial_;
    AttentionBackwardParams<T> attention_;
};

}  // namespace s2s_fast::cpu
