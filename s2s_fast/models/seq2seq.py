"""The Seq2Seq model: embedding -> LSTM/GRU encoder -> bridge -> attentional decoder -> output projection.

Decoder step t (Luong et al. 2015, with Bahdanau's additive score as one choice of score):
    x_t = [embed(y_{t-1}); a_{t-1}] with input feeding, else embed(y_{t-1})
    h_t = RNN stack(x_t, state)
    c_t, weights_t = attention(h_t, encoder outputs)      (c_t = encoder summary for attention "none")
    a_t = tanh(W_c [h_t; c_t]);  logits_t = W_y a_t + b_y
Without input feeding the decoder RNN runs over the whole target in one call and attention takes all queries at once;
with it, a one-layer decoder with Bahdanau attention is one call of F.lstm_attention_decoder (or its GRU twin) in
training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .. import functional as F
from ..nn import GRU, LSTM, AdditiveAttention, Dropout, Linear, LuongAttention
from ..nn.rnn import layer_weights
from .config import Seq2SeqConfig


class EncoderOutput(NamedTuple):
    memory: torch.Tensor  # [B, S, H] encoder states, zero at padded positions
    mask: torch.Tensor  # [B, S] bool, True at real source positions
    key_proj: torch.Tensor | None  # [B, S, A] keys projected once for attention (None for attention "none")
    summary: torch.Tensor  # [B, H] top layer's final state over both directions
    final: torch.Tensor | tuple  # encoder final state(s) [L*D, B, H_enc]


class CTCScores(NamedTuple):
    log_probs: torch.Tensor  # [B, S * CTC_FRAMES, V] float32 log-probabilities of the CTC head, the blank at pad_id
    lengths: torch.Tensor  # [B] int64 frames of each row: its source length * CTC_FRAMES


# Frames of the CTC head per source position: a pronunciation may hold more phonemes than its word has letters
# ("box": B AA1 K S), which one frame a letter could not emit.
CTC_FRAMES = 2


class DecoderState(NamedTuple):
    hidden: torch.Tensor | tuple  # [L, B, H] (a pair h, c for LSTM)
    feed: torch.Tensor | None  # [B, H] previous attentional state (input feeding), else None


def _select_rows(value, index: torch.Tensor, dim: int):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(v.index_select(dim, index) for v in value)
    return value.index_select(dim, index)


class Decodes:
    """``generate`` for what decodes: Seq2Seq, and Ensemble and BothDirections (s2s_fast.models.ensemble)."""

    def generate(self, src, src_lengths, **options):
        """Decode; see s2s_fast.decoding.generate for the options and the return value."""
        from ..decoding import generate

        return generate(self, src, src_lengths, **options)


class Seq2Seq(Decodes, nn.Module):
    """Attentional encoder-decoder; see the module docstring for the equations and Seq2SeqConfig for options."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"Seq2Seq: config must be a Seq2SeqConfig (Seq2SeqConfig.from_dict reads a dict), got "
                            f"{type(config).__name__}")
        self.config = config
        c = config
        self.is_lstm = c.cell == "lstm"
        rnn_type = LSTM if self.is_lstm else GRU
        directions = 2 if c.bidirectional else 1
        self.src_embed = nn.Embedding(c.src_vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.encoder = rnn_type(c.embed_dim, c.hidden_size // directions, num_layers=c.encoder_layers,
                                bidirectional=c.bidirectional, batch_first=True,
                                dropout=c.dropout if c.encoder_layers > 1 else 0.0, backend=c.backend)
        bridged = c.decoder_layers * c.hidden_size
        self.bridge_h = Linear(c.hidden_size, bridged, backend=c.backend)
        self.bridge_c = Linear(c.hidden_size, bridged, backend=c.backend) if self.is_lstm else None
        decoder_input = c.embed_dim + (c.hidden_size if c.input_feeding else 0)
        self.decoder = rnn_type(decoder_input, c.hidden_size, num_layers=c.decoder_layers,
                                dropout=c.dropout if c.decoder_layers > 1 else 0.0, backend=c.backend)
        attention_size = c.attention_size or c.hidden_size
        if c.attention == "bahdanau":
            self.attention = AdditiveAttention(c.hidden_size, c.hidden_size, attention_size, backend=c.backend)
        elif c.attention in ("luong-general", "luong-dot"):
            self.attention = LuongAttention(c.hidden_size, c.hidden_size, method=c.attention.split("-")[1],
                                            backend=c.backend)
        else:
            self.attention = None
        self.combine = Linear(2 * c.hidden_size, c.hidden_size, bias=False, backend=c.backend)
        self.output = Linear(c.hidden_size, c.tgt_vocab_size, backend=c.backend)
        if c.tie_embeddings:
            self.output.weight = self.tgt_embed.weight
        self.dropout = Dropout(c.dropout, backend=c.backend)
        # The CTC head (training alone; Seq2SeqConfig.ctc_weight): CTC_FRAMES frames of target scores a position.
        self.ctc_head = (Linear(c.hidden_size, CTC_FRAMES * c.tgt_vocab_size, backend=c.backend)
                         if c.ctc_weight > 0 else None)

    def _check_tokens(self, name: str, tokens: torch.Tensor, vocab: int) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"Seq2Seq: {name} must be an int64 tensor of token ids, got "
                            f"{getattr(tokens, 'dtype', type(tokens).__name__)}")
        if tokens.dim() != 2:
            raise ValueError(f"Seq2Seq: {name} must be [B, T], got shape {list(tokens.shape)}")
        if torch.compiler.is_compiling():
            # An op of the graph: reading the values on the host while tracing would break the graph and pin sizes.
            torch._assert_async(((tokens >= 0) & (tokens < vocab)).all(),
                                f"Seq2Seq: {name} holds ids outside the vocabulary [0, {vocab})")
        elif tokens.numel() and not tokens.is_meta and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
            raise ValueError(f"Seq2Seq: {name} holds ids outside the vocabulary [0, {vocab}): "
                             f"min {int(tokens.min())}, max {int(tokens.max())}")

    def check_source(self, src: torch.Tensor, src_lengths) -> torch.Tensor:
        self._check_tokens("src", src, self.config.src_vocab_size)
        if not isinstance(src_lengths, torch.Tensor):
            src_lengths = torch.as_tensor(src_lengths)
        if src_lengths.shape != (src.shape[0],) or not F.integer_dtype(src_lengths.dtype):
            raise ValueError(f"Seq2Seq: src_lengths must be integer [B] = [{src.shape[0]}], got "
                             f"{src_lengths.dtype} of shape {list(src_lengths.shape)}")
        if src_lengths.dtype in F.WIDE_UNSIGNED:
            src_lengths = src_lengths.to(torch.int64)
        if src_lengths.is_meta:
            raise ValueError("Seq2Seq: src_lengths must hold values (a CPU tensor, say), not be on the meta device: "
                             "which steps each row runs depends on them")
        host = src_lengths.cpu()
        if torch.compiler.is_compiling():
            torch._assert_async(((host >= 1) & (host <= src.shape[1])).all(),
                                "Seq2Seq: src_lengths must lie in [1, S]")
        elif src.shape[0] and (int(host.min()) < 1 or int(host.max()) > src.shape[1]):
            raise ValueError(f"Seq2Seq: src_lengths must lie in [1, S] = [1, {src.shape[1]}], got min "
                             f"{int(host.min())} and max {int(host.max())}")
        return host

    def encode(self, src: torch.Tensor, src_lengths) -> EncoderOutput:
        """src [B, S] token ids (padded), src_lengths [B] in [1, S] -> EncoderOutput."""
        lengths = self.check_source(src, src_lengths)
        embedded = self.dropout(self.src_embed(src))  # [B, S, E]
        memory, final = self.encoder.forward_padded(embedded, lengths)
        mask = torch.arange(src.shape[1], device=src.device) < lengths.to(src.device).unsqueeze(1)
        final_h = final[0] if self.is_lstm else final
        summary = self._top_layer(final_h)
        key_proj = self.attention.project_keys(memory) if self.attention is not None else None
        return EncoderOutput(memory, mask, key_proj, summary, final)

    def _top_layer(self, final: torch.Tensor) -> torch.Tensor:
        """Encoder final states [L*D, B, H/D] -> the top layer's, both directions concatenated: [B, H]."""
        directions = 2 if self.config.bidirectional else 1
        top = final[-directions:]  # [D, B, H/D]
        return top.transpose(0, 1).reshape(top.shape[1], top.shape[0] * top.shape[2])  # -1 fails when B is 0

    def init_state(self, encoded: EncoderOutput) -> DecoderState:
        """The decoder's initial state, bridged from the encoder's final state."""
        c = self.config
        batch = encoded.summary.shape[0]

        def bridge(layer: Linear, summary: torch.Tensor, squash: bool) -> torch.Tensor:
            state = layer(summary)
            state = torch.tanh(state) if squash else state
            return state.view(batch, c.decoder_layers, c.hidden_size).transpose(0, 1).contiguous()

        hidden = bridge(self.bridge_h, encoded.summary, True)
        if self.is_lstm:
            hidden = (hidden, bridge(self.bridge_c, self._top_layer(encoded.final[1]), False))
        feed = encoded.summary.new_zeros(batch, c.hidden_size) if c.input_feeding else None
        return DecoderState(hidden, feed)

    def _rnn_step(self, input: torch.Tensor, hidden):
        """One step of the decoder's RNN stack with its own weights: input [B, I] -> (top h [B, H], new hidden)."""
        layers = self.config.decoder_layers
        h_all, c_all = hidden if self.is_lstm else (hidden, None)
        new_h, new_c = [], []
        layer_input = input
        for layer in range(layers):
            weights = layer_weights(self.decoder, layer, 0)
            if self.is_lstm:
                h, cell = F.lstm_cell(layer_input, h_all[layer], c_all[layer], *weights, backend=self.config.backend)
                new_c.append(cell)
            else:
                h = F.gru_cell(layer_input, h_all[layer], *weights, backend=self.config.backend)
            new_h.append(h)
            layer_input = h
            if self.decoder.dropout and self.training and layer < layers - 1:
                layer_input = F.dropout(h, self.decoder.dropout, training=True, backend=self.config.backend)
        stacked = torch.stack(new_h)
        return layer_input, ((stacked, torch.stack(new_c)) if self.is_lstm else stacked)

    def _attend(self, query: torch.Tensor, encoded: EncoderOutput):
        """query [B, H] or [B, T, H] -> (context like query, weights [B, (T,) S] or None)."""
        if self.attention is None:
            summary = encoded.summary if query.dim() == 2 else encoded.summary.unsqueeze(1).expand_as(query)
            return summary, None
        return self.attention(query, values=encoded.memory, mask=encoded.mask, key_proj=encoded.key_proj)

    def _attentional(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.tanh(self.combine(torch.cat([query, context], dim=-1))))

    def decode_step(self, prev_tokens: torch.Tensor, state: DecoderState, encoded: EncoderOutput):
        """prev_tokens [B] -> (logits [B, V], new state, attention weights [B, S] or None)."""
        embedded = self.dropout(self.tgt_embed(prev_tokens))
        step_input = torch.cat([embedded, state.feed], dim=-1) if state.feed is not None else embedded
        top, hidden = self._rnn_step(step_input, state.hidden)
        context, weights = self._attend(top, encoded)
        attentional = self._attentional(top, context)
        new_state = DecoderState(hidden, attentional if state.feed is not None else None)
        return self.output(attentional), new_state, weights

    def forward(self, src: torch.Tensor, src_lengths, tgt_in: torch.Tensor, sampling_rate: float = 0.0,
                generator: torch.Generator | None = None, ctc: bool = False):
        """Teacher-forced logits, optionally with scheduled sampling (and the CTC head's scores).

        Args:
            src: [B, S] source ids, padded with pad_id. src_lengths: [B] in [1, S].
            tgt_in: [B, T] decoder input ids (BOS followed by the target without its last token), padded.
            sampling_rate: scheduled sampling (Bengio et al. 2015): at each step after the first, each row reads,
                with this probability, the model's own previous prediction (argmax, no gradient) instead of the gold
                token; padded positions stay padded. 0 is plain teacher forcing.
            generator: random source for the sampling decisions (default: torch's global one).
            ctc: also return the CTC head's scores of the source (a model with ctc_weight > 0), for ctc_loss.

        Returns:
            logits [B, T, V] ([B, 0, V] for a target of no steps, from every configuration); with ctc, the pair
            (logits, CTCScores).
        """
        self._check_tokens("tgt_in", tgt_in, self.config.tgt_vocab_size)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"Seq2Seq: tgt_in has batch {tgt_in.shape[0]} but src has {src.shape[0]}")
        sampling_rate = _fraction("Seq2Seq: sampling_rate", sampling_rate)
        if ctc and self.ctc_head is None:
            raise ValueError("Seq2Seq: ctc=True asks for the CTC head's scores, but this model has none (its "
                             "ctc_weight is 0)")
        encoded = self.encode(src, src_lengths)
        logits = self._teacher_forced_logits(encoded, tgt_in, sampling_rate, generator)
        return (logits, self.ctc_scores(encoded)) if ctc else logits

    def _teacher_forced_logits(self, encoded: EncoderOutput, tgt_in: torch.Tensor, sampling_rate: float,
                               generator: torch.Generator | None) -> torch.Tensor:
        """forward's logits [B, T, V] from the encoding of its source."""
        if tgt_in.shape[1] == 0:  # no steps: [B, 0, V] from every decoder (the step loops would stack nothing)
            return self.output(encoded.memory.new_zeros(tgt_in.shape[0], 0, self.config.hidden_size))
        state = self.init_state(encoded)
        if sampling_rate > 0.0:
            return self._scheduled_sampling(tgt_in, state, encoded, sampling_rate, generator)
        embedded = self.dropout(self.tgt_embed(tgt_in))  # [B, T, E]
        if not self.config.input_feeding:
            outputs, _ = self.decoder.forward_padded(embedded.transpose(0, 1), None, state.hidden)
            outputs = outputs.transpose(0, 1)  # [B, T, H]
            context, _ = self._attend(outputs, encoded)
            return self.output(self._attentional(outputs, context))
        if self._one_op_decoder:
            return self.output(self._attentional_sequence(embedded, state, encoded))
        attentional = []
        hidden, feed = state
        for embedded_t in embedded.unbind(1):  # unbind: one stack in backward, not a zero tensor per step
            top, hidden = self._rnn_step(torch.cat([embedded_t, feed], dim=-1), hidden)
            context, _ = self._attend(top, encoded)
            feed = self._attentional(top, context)
            attentional.append(feed)
        return self.output(torch.stack(attentional, dim=1))

    def ctc_scores(self, encoded: EncoderOutput) -> CTCScores:
        """The CTC head's log-probabilities over the encoder's states, CTC_FRAMES frames a source position; each row's
        frames past its source's are padding."""
        if self.ctc_head is None:
            raise ValueError("Seq2Seq: this model has no CTC head (its ctc_weight is 0)")
        batch, positions = encoded.mask.shape
        scores = self.ctc_head(encoded.memory).reshape(batch, positions * CTC_FRAMES, self.config.tgt_vocab_size)
        log_probs = torch.log_softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
        return CTCScores(log_probs, encoded.mask.sum(1).cpu() * CTC_FRAMES)

    def ctc_loss(self, scores: CTCScores, tgt_out: torch.Tensor) -> torch.Tensor:
        """CTC's negative log-likelihood of each target under ``scores`` (ctc_scores), summed over the batch and
        divided by its targets' tokens (EOS not among them, which CTC does not emit; sequence_loss's mean counts
        it); ``tgt_out`` is the decoder's: [B, T], each row the target in writing order followed by EOS, then
        padding. CTC reads each target in reading order, the pad id its blank. A target that no path of its row's
        frames can emit (more tokens, repeats counted twice, than the frames) adds 0 and no gradient (torch's
        zero_infinity)."""
        c = self.config
        if not F.integer_dtype(tgt_out.dtype) or tgt_out.dim() != 2 or tgt_out.shape[0] != scores.lengths.shape[0]:
            raise ValueError(f"Seq2Seq.ctc_loss: tgt_out must be integer token ids [B, T] with B = "
                             f"{scores.lengths.shape[0]}, got {tgt_out.dtype} of shape {list(tgt_out.shape)}")
        tokens = tgt_out.long()
        lengths = (tokens != c.pad_id).sum(1) - 1  # each row ends in EOS
        if tokens.shape[0] and (int(lengths.min()) < 0 or
                                not bool((tokens.gather(1, lengths.clamp(min=0).unsqueeze(1)) == c.eos_id).all())):
            raise ValueError("Seq2Seq.ctc_loss: each row of tgt_out must be its target followed by EOS, then padding")
        if c.reverse_target:  # row b's first lengths[b] tokens, read back: index lengths[b] - 1 - t
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            back = (lengths.unsqueeze(1) - 1 - positions).clamp(min=0)
            tokens = torch.where(positions < lengths.unsqueeze(1), tokens.gather(1, back), c.pad_id)
        total = nn.functional.ctc_loss(scores.log_probs.transpose(0, 1), tokens, scores.lengths, lengths.cpu(),
                                       blank=c.pad_id, reduction="sum", zero_infinity=True)
        return total / lengths.sum().clamp(min=1)

    @property
    def _one_op_decoder(self) -> bool:
        """Whether the teacher-forced decoder is one call of F.lstm_attention_decoder or F.gru_attention_decoder: an
        RNN of one layer with input feeding and Bahdanau attention (the ops are that decoder)."""
        c = self.config
        return c.decoder_layers == 1 and c.input_feeding and c.attention == "bahdanau"

    def _attentional_sequence(self, embedded: torch.Tensor, state: DecoderState,
                              encoded: EncoderOutput) -> torch.Tensor:
        """embedded [B, T, E] -> the attentional states [B, T, H] of every step, in one op; the same equations
        as decode_step's loop, the dropout of the attentional states drawn for all steps at once."""
        hidden, feed = state
        batch, steps = embedded.shape[:2]
        dropout_mask = None
        if self.training and self.dropout.p > 0:
            dropout_mask = self.dropout(embedded.new_ones(steps, batch, self.config.hidden_size))
        attention = (self.attention.query_layer.weight, encoded.key_proj, self.attention.v, encoded.memory,
                     encoded.mask, self.combine.weight, dropout_mask)
        weights = layer_weights(self.decoder, 0, 0)
        if self.is_lstm:
            output = F.lstm_attention_decoder(embedded.transpose(0, 1), hidden[0][0], hidden[1][0], feed, *weights,
                                              *attention, backend=self.config.backend)[0]
        else:
            output = F.gru_attention_decoder(embedded.transpose(0, 1), hidden[0], feed, *weights, *attention,
                                             backend=self.config.backend)[0]
        return output.transpose(0, 1)

    def _scheduled_sampling(self, tgt_in: torch.Tensor, state: DecoderState, encoded: EncoderOutput, rate: float,
                            generator: torch.Generator | None) -> torch.Tensor:
        """Step by step, feeding back the previous argmax in a random ``rate`` share of rows: logits [B, T, V]."""
        steps = []
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t > 0:
                draw = torch.rand(tgt_in.shape[0], generator=generator, device="cpu").to(tgt_in.device)
                sampled = (draw < rate) & (tgt_in[:, t] != self.config.pad_id)
                tokens = torch.where(sampled, steps[-1].detach().argmax(dim=-1), tgt_in[:, t])
            logits, state, _ = self.decode_step(tokens, state, encoded)
            steps.append(logits)
        return torch.stack(steps, dim=1)

    @staticmethod
    def select_encoded(encoded: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
        """Rows ``index`` of every batch-indexed field (beam expansion)."""
        return EncoderOutput(encoded.memory.index_select(0, index), encoded.mask.index_select(0, index),
                             _select_rows(encoded.key_proj, index, 0), encoded.summary.index_select(0, index),
                             _select_rows(encoded.final, index, 1))

    @staticmethod
    def select_state(state: DecoderState, index: torch.Tensor) -> DecoderState:
        """Rows ``index`` of a decoder state (beam reordering)."""
        return DecoderState(_select_rows(state.hidden, index, 1), _select_rows(state.feed, index, 0))


def _fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1] (a Python, NumPy or 0-d tensor number); ValueError naming it otherwise."""
    try:
        number = None if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError, RuntimeError):
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over [B, T, V] logits and [B, T] targets (token ids of any integer dtype); padded targets never
    count. reduction "mean" (over the targets that count: NaN when none does, as torch's), "sum", or "none": [B, T],
    zero at padded targets."""
    if not F.integer_dtype(targets.dtype):
        raise ValueError(f"sequence_loss: targets must be token ids of an integer dtype, got {targets.dtype}")
    # NaN and negative values were taken as 0, silently.
    label_smoothing = _fraction("sequence_loss: label_smoothing", label_smoothing)
    if logits.dim() < 1 or tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"sequence_loss: targets {tuple(targets.shape)} must be logits {tuple(logits.shape)} without "
                         "its last (vocabulary) dimension")
    # In float32 at least: half and bfloat16 logits widened, float64 kept.
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = nn.functional.cross_entropy(wide.reshape(-1, logits.shape[-1]), targets.reshape(-1).long(),
                                       ignore_index=pad_id, label_smoothing=label_smoothing, reduction=reduction)
    return loss.view(targets.shape) if reduction == "none" else loss
