"""Reference teacher-forced attentional GRU decoder: lstm_attention_decoder.py's decoder with a GRU cell
(s2s_fast.functional.gru_attention_decoder), step by step through the functional ops on ``backend``."""

from __future__ import annotations

from .lstm_attention_decoder import attention_readout


def gru_attention_decoder(input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values,
                          mask, combine_weight, dropout_mask=None, *, backend="reference"):
    """input [T, B, E] -> (output [T, B, H], hy [B, H], weights [T, B, S]); see the functional op."""
    from .. import functional as F  # the functional layer imports the backends, this module among them

    def cell(x, h):
        h = F.gru_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh, backend=backend)
        return h, (h,)

    output, (hy,), weights = attention_readout(cell, input, (hx,), feed, query_weight, key_proj, v, values, mask,
                                               combine_weight, dropout_mask, backend,
                                               (weight_ih, weight_hh, bias_ih, bias_hh))
    return output, hy, weights
