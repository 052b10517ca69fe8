"""Seq2Seq models."""

from .config import ATTENTIONS, CELLS, Seq2SeqConfig
from .seq2seq import DecoderState, EncoderOutput, Seq2Seq, sequence_loss

__all__ = ["ATTENTIONS", "CELLS", "DecoderState", "EncoderOutput", "Seq2Seq", "Seq2SeqConfig", "sequence_loss"]
