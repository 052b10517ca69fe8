"""Reference teacher-forced attentional LSTM decoder: Luong's input-feeding decoder with Bahdanau's additive score,
one LSTM layer, step by step through the functional ops (s2s_fast.functional.lstm_attention_decoder).

Each step is the ops a decoder step is built of: lstm_cell on [input_t; feed_{t-1}], linear for the query,
additive_attention, linear on [h_t; context_t], tanh and the dropout mask. The reference backend runs them on the
reference; a backend without its own implementation of the whole op runs them on its own ops, and auto, where no
fused backend serves the call, on each op's auto choice (``backend``, see s2s_fast.backends). gru_attention_decoder.py
runs the same steps around a GRU cell.
"""

from __future__ import annotations

import torch

from .time_loop import exact_zero


def attention_readout(cell, input, state: tuple, feed, query_weight, key_proj, v, values, mask, combine_weight,
                      dropout_mask, backend, cell_weights: tuple):
    """The decoder's time loop around ``cell(x_t, *state) -> (h_t, new state)``: (output [T, B, H], the final state,
    weights [T, B, S]); for T = 0 empty ones in the graph of every input, ``cell``'s ``cell_weights`` among them."""
    from .. import functional as F  # the functional layer imports the backends, this module among them

    outputs, weights = [], []
    for embedded in input.unbind(0):  # unbind: one stack in backward, not a zero tensor per step
        h, state = cell(torch.cat([embedded, feed], dim=-1), *state)
        context, step_weights = F.additive_attention(F.linear(h, query_weight, backend=backend), key_proj, v, values,
                                                     mask, backend=backend)
        feed = torch.tanh(F.linear(torch.cat([h, context], dim=-1), combine_weight, backend=backend))
        if dropout_mask is not None:
            feed = feed * dropout_mask[len(outputs)]
        outputs.append(feed)
        weights.append(step_weights)
    if not outputs:
        batch, keys = input.shape[1], values.shape[1]
        zero = exact_zero(input, *state, feed, query_weight, key_proj, v, values, combine_weight, *cell_weights)
        return input.new_zeros(0, batch, state[0].shape[1]) + zero, state, input.new_zeros(0, batch, keys) + zero
    return torch.stack(outputs), state, torch.stack(weights)


def lstm_attention_decoder(input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v,
                           values, mask, combine_weight, dropout_mask=None, *, backend="reference"):
    """input [T, B, E] -> (output [T, B, H], hy [B, H], cy [B, H], weights [T, B, S]); see the functional op."""
    from .. import functional as F  # the functional layer imports the backends, this module among them

    def cell(x, h, c):
        h, c = F.lstm_cell(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, backend=backend)
        return h, (h, c)

    output, (hy, cy), weights = attention_readout(cell, input, (hx, cx), feed, query_weight, key_proj, v, values,
                                                  mask, combine_weight, dropout_mask, backend,
                                                  (weight_ih, weight_hh, bias_ih, bias_hh))
    return output, hy, cy, weights
