"""Reference teacher-forced attentional LSTM decoder: Luong's input-feeding decoder with Bahdanau's additive score,
one LSTM layer, step by step through the functional ops (s2s_fast.functional.lstm_attention_decoder).

Each step is the ops a decoder step is built of: lstm_cell on [input_t; feed_{t-1}], linear for the query,
additive_attention, linear on [h_t; context_t], tanh and the dropout mask. The reference backend runs them on the
reference; a backend without its own implementation of the whole op runs them on its own ops, and auto, where no
fused backend serves the call, on each op's auto choice (``backend``, see s2s_fast.backends).
"""

from __future__ import annotations

import torch


def lstm_attention_decoder(input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v,
                           values, mask, combine_weight, dropout_mask=None, *, backend="reference"):
    """input [T, B, E] -> (output [T, B, H], hy [B, H], cy [B, H], weights [T, B, S]); see the functional op."""
    from .. import functional as F  # the functional layer imports the backends, this module among them

    h, c = hx, cx
    outputs, weights = [], []
    for embedded in input.unbind(0):  # unbind: one stack in backward, not a zero tensor per step
        h, c = F.lstm_cell(torch.cat([embedded, feed], dim=-1), h, c, weight_ih, weight_hh, bias_ih, bias_hh,
                           backend=backend)
        context, step_weights = F.additive_attention(F.linear(h, query_weight, backend=backend), key_proj, v, values,
                                                     mask, backend=backend)
        feed = torch.tanh(F.linear(torch.cat([h, context], dim=-1), combine_weight, backend=backend))
        if dropout_mask is not None:
            feed = feed * dropout_mask[len(outputs)]
        outputs.append(feed)
        weights.append(step_weights)
    if not outputs:
        batch, keys = input.shape[1], values.shape[1]
        return input.new_zeros(0, batch, hx.shape[1]), hx, cx, input.new_zeros(0, batch, keys)
    return torch.stack(outputs), h, c, torch.stack(weights)
