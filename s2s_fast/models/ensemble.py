"""Ensemble: several trained Seq2Seq models decoding as one.

Each member encodes the source and runs its own decoder state; at every step the members' log-probabilities are
averaged (a normalised geometric mean of their distributions, as fairseq and Marian ensemble), so greedy and beam
search (s2s_fast.decoding) run on an Ensemble exactly as on one model: it provides the same decoding interface
(check_source, encode, init_state, decode_step, select_encoded, select_state, generate). The members must share the
target and source vocabularies (sizes and special ids here; the tasks' vocabularies are compared where they are
loaded, s2s_fast.checkpoint.open_models); their architectures may differ, their writing direction
(Seq2SeqConfig.reverse_target) may not. A left-to-right and a right-to-left model (or Ensemble) decode together as
BothDirections: each proposes hypotheses, both score them (s2s_fast.decoding.rescored_search). decoder_of picks the
one of these that a list of models needs. They decode; they do not train.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from .seq2seq import Decodes, Seq2Seq

SHARED_FIELDS = ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id")


def _check_shared(owner: str, models: Sequence) -> None:
    """Models that decode together share their vocabularies (SHARED_FIELDS) and their device; ValueError if not."""
    first = models[0].config
    for index, model in enumerate(models[1:], 1):
        for field in SHARED_FIELDS:
            if getattr(model.config, field) != getattr(first, field):
                raise ValueError(f"{owner}: model {index} has {field} {getattr(model.config, field)} but model 0 "
                                 f"has {getattr(first, field)}; the models must share their vocabularies")
    devices = {parameter.device for model in models for parameter in model.parameters()}
    if len(devices) > 1:
        raise ValueError(f"{owner}: the models are on different devices ({', '.join(sorted(map(str, devices)))}); "
                         "move them to one")


def decoder_of(models: Sequence[Seq2Seq]) -> Seq2Seq | Ensemble | BothDirections:
    """What decodes several trained models as one: one model itself; models of one direction an Ensemble; models of
    both (Seq2SeqConfig.reverse_target) a BothDirections of each direction's, the first model's direction first."""
    models = list(models)
    if not models:
        raise ValueError("decoder_of: needs at least one model")
    if len(models) == 1:
        return models[0]
    groups = [[m for m in models if m.config.reverse_target == models[0].config.reverse_target],
              [m for m in models if m.config.reverse_target != models[0].config.reverse_target]]
    combined = [group[0] if len(group) == 1 else Ensemble(group) for group in groups if group]
    return combined[0] if len(combined) == 1 else BothDirections(*combined)


class EnsembleEncoded(NamedTuple):
    members: tuple  # one EncoderOutput per member

    @property
    def memory(self) -> torch.Tensor:
        """The first member's encoder states [B, S, H]: what decoding reads the batch, device and source length
        from."""
        return self.members[0].memory


class Ensemble(Decodes, nn.Module):
    """Seq2Seq models whose per-step log-probabilities are averaged; see the module docstring."""

    def __init__(self, models: Sequence[Seq2Seq]):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("Ensemble: needs at least one model")
        for index, model in enumerate(models):
            if not isinstance(model, Seq2Seq):
                raise TypeError(f"Ensemble: model {index} must be an s2s_fast.models.Seq2Seq, got "
                                f"{type(model).__name__}")
        _check_shared("Ensemble", models)
        if len({model.config.reverse_target for model in models}) > 1:
            raise ValueError("Ensemble: the members write their targets in different directions (reverse_target), so "
                             "their log-probabilities at a step are for different positions; decode a left-to-right "
                             "and a right-to-left model as BothDirections")
        self.members = nn.ModuleList(models)
        self.config = models[0].config

    @property
    def attention(self):
        """The first member's attention module, or None when any member has none (then the ensemble returns no
        attention weights)."""
        if any(member.attention is None for member in self.members):
            return None
        return self.members[0].attention

    def check_source(self, src: torch.Tensor, src_lengths) -> torch.Tensor:
        return self.members[0].check_source(src, src_lengths)

    def encode(self, src: torch.Tensor, src_lengths) -> EnsembleEncoded:
        lengths = self.check_source(src, src_lengths)
        return EnsembleEncoded(tuple(member.encode(src, lengths) for member in self.members))

    def init_state(self, encoded: EnsembleEncoded) -> tuple:
        return tuple(member.init_state(part) for member, part in zip(self.members, encoded.members))

    def decode_step(self, prev_tokens: torch.Tensor, state: tuple, encoded: EnsembleEncoded):
        """prev_tokens [B] -> (the members' mean log-probabilities [B, V] (in at least float32; decoding
        normalises them again), new states, the members' mean attention weights [B, S] or None)."""
        log_probs, states, weights = [], [], []
        for member, member_state, part in zip(self.members, state, encoded.members):
            logits, new_state, member_weights = member.decode_step(prev_tokens, member_state, part)
            log_probs.append(torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1))
            states.append(new_state)
            if member_weights is not None:
                weights.append(member_weights)
        mean = log_probs[0] if len(log_probs) == 1 else torch.stack(log_probs).mean(dim=0)
        if self.attention is None or not weights:
            attention = None
        else:
            attention = weights[0] if len(weights) == 1 else torch.stack(weights).mean(dim=0)
        return mean, tuple(states), attention

    @staticmethod
    def select_encoded(encoded: EnsembleEncoded, index: torch.Tensor) -> EnsembleEncoded:
        return EnsembleEncoded(tuple(Seq2Seq.select_encoded(part, index) for part in encoded.members))

    @staticmethod
    def select_state(state: tuple, index: torch.Tensor) -> tuple:
        return tuple(Seq2Seq.select_state(part, index) for part in state)

    def forward(self, *args, **kwargs):
        raise TypeError("Ensemble decodes (generate, s2s_fast.inference.translate); train its members one by one")


class BothDirections(Decodes, nn.Module):
    """A left-to-right and a right-to-left model (each a Seq2Seq or an Ensemble; Seq2SeqConfig.reverse_target)
    decoding as one: each proposes hypotheses and both score them all (s2s_fast.decoding.rescored_search), so the
    errors one direction makes at the end of a word, the other can outvote. ``directions`` keeps the order given; the
    first model's configuration and attention are the pair's. It decodes (generate); it does not train."""

    def __init__(self, first: Seq2Seq | Ensemble, second: Seq2Seq | Ensemble):
        super().__init__()
        for index, model in enumerate((first, second)):
            if not isinstance(model, (Seq2Seq, Ensemble)):
                raise TypeError(f"BothDirections: model {index} must be a Seq2Seq or an Ensemble, got "
                                f"{type(model).__name__}")
        if first.config.reverse_target == second.config.reverse_target:
            raise ValueError("BothDirections: both models write their targets in the same direction (reverse_target "
                             f"{first.config.reverse_target}); models of one direction decode as an Ensemble")
        _check_shared("BothDirections", (first, second))
        self.first, self.second = first, second
        self.config = first.config

    @property
    def directions(self) -> tuple:
        return self.first, self.second

    @property
    def attention(self):
        return self.first.attention

    def check_source(self, src: torch.Tensor, src_lengths) -> torch.Tensor:
        return self.first.check_source(src, src_lengths)

    def forward(self, *args, **kwargs):
        raise TypeError("BothDirections decodes (generate, s2s_fast.inference.translate); train its models one by one")
