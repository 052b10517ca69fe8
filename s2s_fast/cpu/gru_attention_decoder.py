"""Teacher-forced attentional GRU decoder on the cpu backend (operators in csrc/cpu/gru_attention_decoder.cpp): the GRU
counterpart of lstm_attention_decoder.py, the same attention readout of every step (csrc/cpu/attention_decoder.h).

Per step two products (the feed's part of the input gates, and h_{t-1} @ weight_hh^T: a GRU keeps its input and
hidden parts apart), the GRU layer's step kernel, then the readout. The backward runs the steps in reverse with the
same kernels, adds the attention's key, value and v gradients up in place, and computes the input gradient and each
weight gradient in one product over all steps.
"""

from __future__ import annotations

import torch

from ..reference.gradients import save_inputs, saved_inputs, with_double_backward
from .compiled import dtype_limit, refuse_unsaved


def _forward_fake(input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, mask,
                  combine_weight, dropout_mask, save):
    steps, batch = input.shape[:2]
    hidden, keys, attn, value_size = hx.shape[1], key_proj.shape[1], key_proj.shape[2], values.shape[2]
    kept = steps if save else 0
    return (input.new_empty(steps, batch, hidden), hx.new_empty(hx.shape), input.new_empty(steps, batch, keys),
            input.new_empty(kept, batch, 4 * hidden), input.new_empty(kept, batch, hidden),
            input.new_empty(kept, batch, attn), input.new_empty(kept, batch, hidden + value_size),
            input.new_empty(kept if dropout_mask is not None else 0, batch, hidden))


def _backward_fake(grad_output, grad_hy, grad_weights, input, hx, feed, weight_ih, weight_hh, query_weight, key_proj,
                   v, values, combine_weight, dropout_mask, output, weights, gates, hidden, query_proj, joined,
                   activated):
    return (input.new_empty(input.shape), hx.new_empty(hx.shape), feed.new_empty(feed.shape),
            weight_ih.new_empty(weight_ih.shape), weight_hh.new_empty(weight_hh.shape),
            weight_hh.new_empty(weight_hh.shape[0]), weight_hh.new_empty(weight_hh.shape[0]),
            query_weight.new_empty(query_weight.shape), key_proj.new_empty(key_proj.shape), v.new_empty(v.shape),
            values.new_empty(values.shape), combine_weight.new_empty(combine_weight.shape),
            input.new_empty(input.shape[0] if dropout_mask is not None else 0, *hx.shape))


def _setup_context(ctx, inputs, output):
    (input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, _mask,
     combine_weight, dropout_mask, save) = inputs
    # Nobody differentiates the saved tensors (nor, often, hy and the weights): no zero tensors for them.
    ctx.set_materialize_grads(False)
    ctx.saved = save
    ctx.has_bias = (bias_ih is not None, bias_hh is not None)
    ctx.has_dropout_mask = dropout_mask is not None
    save_inputs(ctx, inputs, output[0], *output[2:])


def _backward(ctx, grad_output, grad_hy, grad_weights, *_saved_grads):
    inputs, (output, weights, gates, hidden, query_proj, joined, activated) = saved_inputs(ctx)
    refuse_unsaved("gru_attention_decoder", ctx.saved)
    (input, hx, feed, weight_ih, weight_hh, _bias_ih, _bias_hh, query_weight, key_proj, v, values, _mask,
     combine_weight, dropout_mask) = inputs[:14]
    grad_output = grad_output if grad_output is not None else torch.zeros_like(output)
    grad_hy = grad_hy if grad_hy is not None else torch.zeros_like(hx)
    (grad_input, grad_hx, grad_feed, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh, grad_query_weight,
     grad_key_proj, grad_v, grad_values, grad_combine_weight, grad_dropout_mask) = (
        torch.ops.s2s_fast.cpu_gru_attention_decoder_bwd(
            grad_output, grad_hy, grad_weights, input, hx, feed, weight_ih, weight_hh, query_weight, key_proj, v,
            values, combine_weight, dropout_mask if ctx.has_dropout_mask else None, output, weights, gates, hidden,
            query_proj, joined, activated))
    return (grad_input, grad_hx, grad_feed, grad_weight_ih, grad_weight_hh,
            grad_bias_ih if ctx.has_bias[0] else None, grad_bias_hh if ctx.has_bias[1] else None, grad_query_weight,
            grad_key_proj, grad_v, grad_values, None, grad_combine_weight,
            grad_dropout_mask if ctx.has_dropout_mask else None, None)


def register() -> None:
    """Attach the fake (meta) implementations and the autograd formula to the C++ operators."""
    torch.library.register_fake("s2s_fast::cpu_gru_attention_decoder_fwd", _forward_fake)
    torch.library.register_autograd("s2s_fast::cpu_gru_attention_decoder_fwd",
                                    with_double_backward("gru_attention_decoder", 14, _backward),
                                    setup_context=_setup_context)
    torch.library.register_fake("s2s_fast::cpu_gru_attention_decoder_bwd", _backward_fake)


def gru_attention_decoder(input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values,
                          mask, combine_weight, dropout_mask=None):
    """The decoder on CPU tensors; see s2s_fast.functional.gru_attention_decoder.

    Returns:
        (output [T, B, H], hy [B, H], weights [T, B, S]).
    """
    floats = (input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values,
              combine_weight, dropout_mask)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in floats)
    output, hy, weights, *_saved = torch.ops.s2s_fast.cpu_gru_attention_decoder_fwd(
        input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, mask,
        combine_weight, dropout_mask, save)
    return output, hy, weights


def gru_attention_decoder_limit(input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v,
                                values, mask, combine_weight, dropout_mask=None) -> str | None:
    """None when the cpu backend serves the call: float32 and float64."""
    return dtype_limit(input)
