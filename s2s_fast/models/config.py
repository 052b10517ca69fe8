"""Seq2SeqConfig: every architectural choice of a Seq2Seq model, validated, JSON-friendly."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from ..backends import BACKEND_NAMES, check_backend_name, unserved_ops
from ..config_values import coerce

CELLS = ("lstm", "gru")
ATTENTIONS = ("bahdanau", "luong-general", "luong-dot", "none")


class BackendCannotServeModel(ValueError):
    """Seq2SeqConfig's refusal of a backend that does not implement one of the model's ops (the bench reports such a
    provider unavailable rather than failed); ``missing`` names those ops, ``serving`` the backends that serve them
    all."""

    def __init__(self, message: str, missing: list[str], serving: list[str]):
        super().__init__(message)
        self.missing, self.serving = missing, serving


@dataclass
class Seq2SeqConfig:
    """Architecture of a Seq2Seq model.

    hidden_size is the decoder's hidden size and the width of the encoder's output; a bidirectional encoder gives
    each direction hidden_size // 2. attention "none" is the plain encoder-decoder with a fixed context vector (the
    encoder's final state). input_feeding feeds the previous attentional state into the next decoder input.
    tie_embeddings shares the target embedding with the output projection (needs embed_dim == hidden_size).
    attention_size (Bahdanau's attention only) defaults to hidden_size. reverse_target makes the decoder write the
    target right to left: training feeds it each target reversed, and generate (s2s_fast.decoding) turns its outputs
    back into reading order, so such a model decodes like any other; its errors differ from a left-to-right model's,
    which is what decoding the two as one buys (s2s_fast.models.BothDirections). ctc_weight > 0 gives the encoder a
    CTC head (Graves et al. 2006) trained beside the decoder (Kim, Hori and Watanabe 2017, joint CTC-attention): the
    training loss is (1 - ctc_weight) x the decoder's cross-entropy + ctc_weight x CTC's (Seq2Seq.ctc_loss), which
    asks the encoder to align the target with the source monotonically; decoding reads the decoder alone. backend
    selects the kernels (None follows s2s_fast's selection).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int = 128
    hidden_size: int = 256
    encoder_layers: int = 2
    decoder_layers: int = 1
    bidirectional: bool = True
    cell: str = "lstm"
    attention: str = "bahdanau"
    attention_size: int | None = None
    input_feeding: bool = True
    dropout: float = 0.2
    tie_embeddings: bool = False
    reverse_target: bool = False
    ctc_weight: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    backend: str | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            setattr(self, field.name, coerce(f"Seq2SeqConfig: {field.name}", getattr(self, field.name),
                                             FIELD_TYPES[field.name]))
        for name in ("src_vocab_size", "tgt_vocab_size", "embed_dim", "hidden_size", "encoder_layers",
                     "decoder_layers"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"Seq2SeqConfig: {name} must be a positive integer, got {value!r}")
        if self.attention_size is not None and self.attention_size < 1:
            raise ValueError(f"Seq2SeqConfig: attention_size must be a positive integer or None, "
                             f"got {self.attention_size!r}")
        if self.attention_size is not None and self.attention != "bahdanau" and self.attention in ATTENTIONS:
            raise ValueError(f"Seq2SeqConfig: attention_size sizes Bahdanau's (additive) attention alone; "
                             f"{self.attention!r} has no such size: leave it None")
        if self.cell not in CELLS:
            raise ValueError(f"Seq2SeqConfig: cell must be one of {CELLS}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"Seq2SeqConfig: attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"Seq2SeqConfig: a bidirectional encoder needs an even hidden_size, got "
                             f"{self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Seq2SeqConfig: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.ctc_weight < 1.0:
            raise ValueError(f"Seq2SeqConfig: ctc_weight must be in [0, 1) (1 would leave the decoder untrained), "
                             f"got {self.ctc_weight}")
        if self.tie_embeddings and self.embed_dim != self.hidden_size:
            raise ValueError(f"Seq2SeqConfig: tie_embeddings needs embed_dim == hidden_size, got {self.embed_dim} "
                             f"and {self.hidden_size}")
        for name, vocab in (("pad_id", "tgt_vocab_size"), ("bos_id", "tgt_vocab_size"), ("eos_id", "tgt_vocab_size")):
            value = getattr(self, name)
            if not 0 <= value < min(self.src_vocab_size, self.tgt_vocab_size):
                raise ValueError(f"Seq2SeqConfig: {name} must index both vocabularies (0 <= id < "
                                 f"{min(self.src_vocab_size, self.tgt_vocab_size)}), got {value!r}")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError("Seq2SeqConfig: pad_id, bos_id and eos_id must differ")
        if self.backend is not None:
            self.backend = check_backend_name(self.backend, "Seq2SeqConfig.backend")
            self._check_backend_serves_the_model()

    def ops(self) -> list[str]:
        """The s2s_fast.functional ops a model of this configuration calls (training and decoding)."""
        attention = {"bahdanau": ["additive_attention"], "none": []}.get(self.attention, ["dot_attention"])
        fused = [f"{self.cell}_attention_decoder"] if self.attention == "bahdanau" else []
        return [f"{self.cell}_layer", f"{self.cell}_cell", *attention, *fused, "linear", "dropout",
                "log_softmax_max", "beam_candidates"]

    def _check_backend_serves_the_model(self) -> None:
        """A backend that cannot serve one of the model's ops is refused here, not at the first forward (a backend
        that cannot be imported on this machine is left to the first call, which says why)."""
        ops = self.ops()
        missing = unserved_ops(self.backend, ops)
        if missing:
            serving = [name for name in BACKEND_NAMES if unserved_ops(name, ops) == []]
            raise BackendCannotServeModel(
                f"Seq2SeqConfig: backend {self.backend!r} does not implement {', '.join(missing)}, which "
                f"{'an LSTM' if self.cell == 'lstm' else 'a GRU'} model with attention {self.attention!r} needs; use "
                f"backend None (auto, which picks per op) or one that serves them all: {', '.join(serving)}",
                missing, serving)

    def writing_order(self, tokens: typing.Sequence) -> list:
        """Target tokens in reading order -> in the order the decoder writes them (reversed with reverse_target), and
        back: the order is its own inverse."""
        return list(tokens)[::-1] if self.reverse_target else list(tokens)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Seq2SeqConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Seq2SeqConfig: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        size = values.get("attention_size")
        if values.get("attention", "bahdanau") != "bahdanau" and isinstance(size, (int, float)) and \
                not isinstance(size, bool) and size >= 1 and float(size).is_integer():
            # Saved before attention_size was refused for attentions that have none (it was ignored there): a size
            # that was valid then is dropped; any other is refused below, as it always was.
            values = {**values, "attention_size": None}
        return cls(**values)


# Each field's annotation, which its values are coerced to.
FIELD_TYPES = typing.get_type_hints(Seq2SeqConfig)
