"""Seq2Seq models."""

from .config import ATTENTIONS, CELLS, Seq2SeqConfig
from .ensemble import BothDirections, Ensemble, EnsembleEncoded, decoder_of
from .presets import PRESETS, preset_config
from .seq2seq import DecoderState, EncoderOutput, Seq2Seq, sequence_loss

__all__ = ["ATTENTIONS", "BothDirections", "CELLS", "DecoderState", "EncoderOutput", "Ensemble", "EnsembleEncoded",
           "PRESETS", "Seq2Seq", "Seq2SeqConfig", "decoder_of", "preset_config", "sequence_loss"]
