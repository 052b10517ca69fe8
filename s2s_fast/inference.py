"""Decoding many inputs with a trained model: length-sorted batches of about a given number of source tokens."""

from __future__ import annotations

from typing import Sequence

from .data import collate, token_batches
from .decoding import check_options
from .models import BothDirections, Ensemble, Seq2Seq


def translate(model: Seq2Seq | Ensemble | BothDirections, sources: Sequence[Sequence[int]], *, beam_size: int = 1,
              length_penalty: float = 0.0, n_best: int = 1, batch_tokens: int = 6000, return_attention: bool = False,
              max_len_ratio: float | None = None, ctc_weight: float = 0.0) -> tuple[list, list | None]:
    """Decode source id lists in length-sorted batches of about ``batch_tokens`` source tokens (the options are
    s2s_fast.decoding.generate's).

    Returns:
        (per input: token ids of the best hypothesis, or n_best (ids, score) pairs when n_best > 1;
         per input: attention [output length, source length] of the best hypothesis, or None without
         return_attention), both in the order of ``sources``.
    """
    check_options(model, beam_size=beam_size, max_len_ratio=max_len_ratio, length_penalty=length_penalty,
                  n_best=n_best, return_attention=return_attention, ctc_weight=ctc_weight)
    device = next(model.parameters()).device
    hypotheses: list = [None] * len(sources)
    attentions: list | None = [None] * len(sources) if return_attention else None
    config = model.config
    for indices in token_batches([len(s) for s in sources], batch_tokens, shuffle=False):
        batch = collate([(sources[i], []) for i in indices], config.pad_id, config.bos_id, config.eos_id)
        result = model.generate(batch.src.to(device), batch.src_lengths, beam_size=beam_size,
                                length_penalty=length_penalty, n_best=n_best, return_attention=return_attention,
                                max_len_ratio=max_len_ratio, ctc_weight=ctc_weight)
        outputs, weights = result if return_attention else (result, None)
        for position, index in enumerate(indices):
            hypotheses[index] = outputs[position]
            if attentions is not None:
                attentions[index] = weights[position]
    return hypotheses, attentions
