"""Greedy and batched beam-search decoding for s2s_fast.models.Seq2Seq.

Beam search keeps ``beam_size`` live hypotheses per input. Each step ranks 2 * beam_size extensions; an extension
ending in EOS among the best beam_size is finished (per hypothesis, not per batch), the best beam_size others live on.
Finished hypotheses are ranked by log-probability divided by GNMT's length penalty ((5 + length) / 6) ** alpha, the
length counting EOS. An input is done when its n_best-th finished score cannot be beaten by any live hypothesis (live
scores only fall as they grow), or when its hypotheses reach its length limit.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import NamedTuple, Sequence

import torch

from . import functional as F
from .data import pad


class Hypothesis(NamedTuple):
    tokens: list
    score: float
    attention: torch.Tensor | None  # [len(tokens), S] for the input's real source positions


# The largest length penalty alpha generate takes, either sign: ((5 + L) / 6) ** alpha stays far inside float range
# for any output length (NaN, infinite or huge alphas made every score NaN, -0.0 or an OverflowError).
MAX_LENGTH_PENALTY = 10


def _length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _length_limits(src_lengths: torch.Tensor, max_len, max_len_ratio, min_len: int = 0) -> list[int]:
    """Per-input limit on output tokens (EOS excluded): max_len, ceil(ratio * source length), or both (the smaller);
    by default 2 * source length + 10; raised to min_len where below it (a limit reached first cut the hypothesis
    short of min_len, silently). The options checked by check_options (min_len <= max_len)."""
    limits = []
    for length in src_lengths.tolist():
        candidates = []
        if max_len is not None:
            candidates.append(max_len)
        if max_len_ratio is not None:
            candidates.append(max(1, math.ceil(max_len_ratio * length)))
        limits.append(max(min(candidates) if candidates else 2 * length + 10, min_len))
    return limits


def _source_attention(weights: list, length: int) -> torch.Tensor:
    """Per-step attention rows [S] -> [steps, length] on the CPU, cut to the real source positions."""
    if not weights:
        return torch.zeros(0, length)
    return torch.stack(weights)[:, :length].float().cpu()


@torch.no_grad()
def greedy_search(model, encoded, src_lengths: torch.Tensor, limits: list[int], min_len: int,
                  return_attention: bool) -> list[Hypothesis]:
    """Pick the most probable token at each step; returns one Hypothesis per input."""
    config = model.config
    batch = encoded.memory.shape[0]
    device = encoded.memory.device
    state = model.init_state(encoded)
    tokens = torch.full((batch,), config.bos_id, dtype=torch.long, device=device)
    limits_tensor = torch.tensor(limits, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps, scores, attention = [], torch.zeros(batch, device=device, dtype=torch.float64), []
    for step in range(max(limits)):
        logits, state, weights = model.decode_step(tokens, state, encoded)
        best, tokens = F.log_softmax_max(logits, config.eos_id if step < min_len else None, backend=config.backend)
        # A row with no finite score left ends here, with score -inf.
        tokens = torch.where(torch.isfinite(best), tokens, config.eos_id)
        scores += torch.where(finished, 0.0, best.double())
        tokens = torch.where(finished, config.pad_id, tokens)
        steps.append(tokens)
        if return_attention and weights is not None:
            attention.append(weights)
        finished |= (tokens == config.eos_id) | (step + 1 >= limits_tensor)
        if bool(finished.all()):
            break
    emitted = torch.stack(steps, dim=1).tolist()
    results = []
    for row in range(batch):
        sequence = emitted[row][:limits[row]]
        length = sequence.index(config.eos_id) if config.eos_id in sequence else len(sequence)
        row_attention = [w[row] for w in attention[:length]]
        results.append(Hypothesis(sequence[:length], float(scores[row]),
                                  _source_attention(row_attention, int(src_lengths[row]))))
    return results


@torch.no_grad()
def beam_search(model, encoded, src_lengths: torch.Tensor, limits: list[int], beam_size: int, min_len: int,
                length_penalty: float, n_best: int, return_attention: bool) -> list[list[Hypothesis]]:
    """Batched beam search; returns, per input, its n_best finished hypotheses, best first."""
    config = model.config
    batch = encoded.memory.shape[0]
    device = encoded.memory.device
    beams = beam_size
    rows = torch.arange(batch, device=device).repeat_interleave(beams)
    encoded = model.select_encoded(encoded, rows)
    state = model.init_state(encoded)
    tokens = torch.full((batch * beams,), config.bos_id, dtype=torch.long, device=device)
    scores = torch.full((batch, beams), float("-inf"), device=device, dtype=torch.float64)
    scores[:, 0] = 0.0
    history = torch.zeros(batch * beams, 0, dtype=torch.long, device=device)
    source_len = encoded.memory.shape[1]
    attention_history = encoded.memory.new_zeros(batch * beams, 0, source_len) if return_attention else None
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [False] * batch
    offsets = (torch.arange(batch, device=device) * beams).unsqueeze(1)  # [B, 1]
    candidates_per_input = min(2 * beams, beams * config.tgt_vocab_size)

    def finish(row: int, flat: int, raw_score: float, length: int) -> None:
        """Keep hypothesis ``flat`` (its tokens in ``history``) as finished for input ``row``."""
        weights = attention_history[flat] if attention_history is not None else []
        finished[row].append(Hypothesis(history[flat].tolist(), raw_score / _length_penalty(length, length_penalty),
                                        _source_attention(list(weights), int(src_lengths[row]))))

    for step in range(max(limits)):
        logits, state, weights = model.decode_step(tokens, state, encoded)
        vocab = logits.shape[1]
        top_scores, top_index = F.beam_candidates(logits, scores, candidates_per_input,
                                                  config.eos_id if step < min_len else None,
                                                  backend=config.backend)  # [B, 2K], best first
        origin, token = top_index // vocab, top_index % vocab
        is_eos = token == config.eos_id
        rank = torch.arange(candidates_per_input, device=device)
        eos_in_top = is_eos & (rank < beams) & torch.isfinite(top_scores)
        # Live hypotheses: the best K extensions that do not end in EOS (at most K of the 2K do).
        live = torch.sort(is_eos.long() * candidates_per_input + rank, dim=1).indices[:, :beams]
        new_scores = top_scores.gather(1, live)
        new_origin = (origin.gather(1, live) + offsets).view(-1)
        new_token = token.gather(1, live).view(-1)

        for row, column in eos_in_top.nonzero().tolist():
            if not done[row]:
                finish(row, row * beams + int(origin[row, column]), float(top_scores[row, column]), step + 1)

        history = torch.cat([history.index_select(0, new_origin), new_token.unsqueeze(1)], dim=1)
        if attention_history is not None and weights is not None:
            attention_history = torch.cat([attention_history.index_select(0, new_origin),
                                           weights.index_select(0, new_origin).unsqueeze(1)], dim=1)
        state = model.select_state(state, new_origin)
        tokens = new_token
        scores = new_scores
        host_scores = new_scores.tolist()
        for row in range(batch):
            if done[row]:
                continue
            if step + 1 >= limits[row]:
                for beam in range(beams):
                    if math.isfinite(host_scores[row][beam]):
                        finish(row, row * beams + beam, host_scores[row][beam], step + 1)
                done[row] = True
            elif not math.isfinite(host_scores[row][0]):
                done[row] = True  # no live hypothesis has a finite score (the model's scores are not finite)
            elif len(finished[row]) >= n_best:
                kept = sorted(h.score for h in finished[row])[-n_best]
                best_live = host_scores[row][0]
                bound = max(best_live / _length_penalty(step + 2, length_penalty),
                            best_live / _length_penalty(limits[row], length_penalty))
                done[row] = bound <= kept
            if done[row]:
                scores[row] = float("-inf")
        if all(done):
            break
    empty = [Hypothesis([], float("-inf"), torch.zeros(0, int(length))) for length in src_lengths.tolist()]
    return [sorted(hypotheses, key=lambda h: -h.score)[:n_best] or [empty[row]]
            for row, hypotheses in enumerate(finished)]


def _search(model, encoded, lengths: torch.Tensor, limits: list[int], beam_size: int, min_len: int,
            length_penalty: float, n_best: int, return_attention: bool) -> list[list[Hypothesis]]:
    """Greedy or beam search; per input its n_best hypotheses, best first, in reading order (a model with
    reverse_target writes right to left: its tokens and attention rows are turned back)."""
    if beam_size == 1 and n_best == 1:
        best = [[h] for h in greedy_search(model, encoded, lengths, limits, min_len, return_attention)]
    else:
        best = beam_search(model, encoded, lengths, limits, beam_size, min_len, length_penalty, n_best,
                           return_attention)
    if not model.config.reverse_target:
        return best
    return [[h._replace(tokens=model.config.writing_order(h.tokens),
                        attention=_reading_order_rows(model.config, h.attention)) for h in row] for row in best]


def _reading_order_rows(config, attention: torch.Tensor | None) -> torch.Tensor | None:
    """Attention rows [steps, S] in the order the decoder wrote them -> in reading order (turned with
    reverse_target, as Seq2SeqConfig.writing_order turns the tokens)."""
    return attention.flip(0) if attention is not None and config.reverse_target else attention


@contextlib.contextmanager
def _evaluating(model):
    """The model in eval mode (no dropout) inside; every submodule's mode restored as it was after (an Ensemble's
    own flag, a new Module's True, is not its members')."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def score_targets(model, src: torch.Tensor, src_lengths, targets: Sequence[Sequence[int]],
                  return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher-forced log-probability of each target followed by EOS under a Seq2Seq or an Ensemble, in eval mode.

    Args:
        src: [B, S] source ids, padded, and src_lengths [B], as generate takes them.
        targets: B lists of token ids in reading order (a model with reverse_target reads each one reversed),
            without EOS (as generate returns them).
        return_attention: also return the attention weights of every step.

    Returns:
        (float64 [B], and with return_attention the weights [B, steps, S] in the model's writing order, else None).
        Each step's scores are normalised as beam search's are, so a hypothesis that search finished with EOS scores
        here what it scored there before the length penalty (one it stopped at the length limit is scored with EOS
        after it); a step whose score is NaN (weights that are not finite) counts as -inf.
    """
    if getattr(model, "directions", None) is not None:
        raise TypeError("score_targets: a BothDirections pair holds two models; score with each of them")
    targets = [_checked_target(model.config, index, target) for index, target in enumerate(targets)]
    if len(targets) != src.shape[0]:
        raise ValueError(f"score_targets: {len(targets)} targets for {src.shape[0]} sources")
    with _evaluating(model):
        lengths = model.check_source(src, src_lengths)
        _check_devices(model, src)
        if not targets:
            return torch.zeros(0, dtype=torch.float64, device=src.device), None
        with torch.no_grad():
            return _teacher_forced(model, model.encode(src, lengths), targets, return_attention)


def _checked_target(config, index: int, target: Sequence[int]) -> list[int]:
    """A target of score_targets as a list of ids the model writes; ValueError naming the first that is not."""
    try:
        ids = [operator.index(token) for token in target]
    except TypeError:
        raise ValueError(f"score_targets: target {index} must be a sequence of integer token ids, got "
                         f"{list(target)[:8]!r}") from None
    for token in ids:
        if not 0 <= token < config.tgt_vocab_size or token == config.eos_id:
            raise ValueError(f"score_targets: target {index} holds {token}, not an id the model writes before its "
                             f"end (0 <= id < {config.tgt_vocab_size}, not the EOS id {config.eos_id}, which ends "
                             "every target scored)")
    return ids


def _teacher_forced(model, encoded, targets: list[list[int]],
                    return_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """score_targets past its checks: ``encoded`` the model's encoding of the targets' sources, row by row."""
    config = model.config
    device = encoded.memory.device
    written = [config.writing_order(target) for target in targets]
    steps_in = pad([[config.bos_id, *target] for target in written], config.pad_id).to(device)
    steps_out = pad([[*target, config.eos_id] for target in written], config.pad_id).to(device)
    ends = torch.tensor([len(target) + 1 for target in written], device=device)
    state = model.init_state(encoded)
    total = torch.zeros(len(written), dtype=torch.float64, device=device)
    attention = []
    for step in range(steps_in.shape[1]):
        logits, state, weights = model.decode_step(steps_in[:, step], state, encoded)
        log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        chosen = log_probs.gather(1, steps_out[:, step:step + 1]).squeeze(1).double()
        chosen = torch.where(torch.isnan(chosen), float("-inf"), chosen)
        total += torch.where(step < ends, chosen, 0.0)
        if return_attention and weights is not None:
            attention.append(weights)
    return total, (torch.stack(attention, dim=1) if attention else None)


def _ctc_log_likelihoods(model, encoded, targets: list[list[int]]) -> torch.Tensor:
    """float64 [N]: CTC's log-likelihood of target n (token ids in reading order, without EOS) under the CTC head
    of ``model`` (a Seq2Seq, or an Ensemble: the mean of its members') over row n of ``encoded``; -inf where no path
    of the row's frames emits the target, or the target holds the pad id (CTC's blank, which it never emits)."""
    members = getattr(model, "members", [model])
    parts = getattr(encoded, "members", [encoded])
    blank = model.config.pad_id
    tokens = pad(targets, blank)
    if tokens.shape[1] == 0:  # torch's CTC takes no targets of width 0
        tokens = torch.full((len(targets), 1), blank, dtype=torch.long)
    width = tokens.shape[1]
    target_lengths = torch.tensor([len(target) for target in targets])
    holds_blank = (tokens == blank) & (torch.arange(width) < target_lengths.unsqueeze(1))
    tokens = torch.where(holds_blank, model.config.eos_id, tokens)  # scored, then set to -inf below
    total = torch.zeros(len(targets), dtype=torch.float64)
    for member, part in zip(members, parts):
        scores = member.ctc_scores(part)
        total -= torch.nn.functional.ctc_loss(scores.log_probs.transpose(0, 1), tokens.to(scores.log_probs.device),
                                              scores.lengths, target_lengths, blank=member.config.pad_id,
                                              reduction="none").double().cpu()
    return torch.where(holds_blank.any(1), float("-inf"), total / len(members))


def rescored_search(models, src: torch.Tensor, lengths: torch.Tensor, limits: list[int], beam_size: int,
                    min_len: int, length_penalty: float, n_best: int, return_attention: bool,
                    ctc_weight: float = 0.0) -> list[list[Hypothesis]]:
    """Models decoding as one by rescoring what they propose: two that write in opposite directions
    (s2s_fast.models.BothDirections), or one whose beam is rescored with its CTC head. Each proposes the hypotheses
    its own search finds (beam_size of them, with the length penalty; greedy search its one), every model scores
    every distinct proposal with a finite score (score_targets), and the proposals rank by the mean of the models'
    log-probabilities over GNMT's length penalty (the length counting EOS). With ``ctc_weight`` w > 0 that mean is
    (1 - w) x the decoders' mean + w x the mean of the models' CTC log-likelihoods (their CTC heads,
    Seq2Seq.ctc_loss; joint CTC-attention decoding as a rescoring of the proposals). A proposal CTC cannot emit
    (more tokens, a repeated one counted twice, than its source's frames; or one holding the pad id, CTC's blank)
    scores -inf, and an input none of whose proposals scores a finite joint score ranks them by the decoders' mean
    alone. Per input, the n_best best with finite scores, in reading order, or as generate's searches do one empty
    hypothesis scoring -inf where none has; their attention is the first model's."""
    encodings = [model.encode(src, lengths) for model in models]
    proposals: list[dict] = [{} for _ in range(src.shape[0])]  # per input: tokens -> None, in order of proposal
    for model, encoded in zip(models, encodings):
        found = _search(model, encoded, lengths, limits, beam_size, min_len, length_penalty, beam_size, False)
        for row, hypotheses in enumerate(found):
            proposals[row].update(dict.fromkeys(tuple(h.tokens) for h in hypotheses if math.isfinite(h.score)))
    rows = [row for row, candidates in enumerate(proposals) for _ in candidates]
    targets = [list(tokens) for candidates in proposals for tokens in candidates]
    mean, attention = [], None
    if targets:
        index = torch.tensor(rows, device=src.device)
        selected = [model.select_encoded(encoded, index) for model, encoded in zip(models, encodings)]
        forced = [_teacher_forced(model, encoded, targets, return_attention and n == 0)
                  for n, (model, encoded) in enumerate(zip(models, selected))]
        decoders = sum(scores for scores, _ in forced) / len(models)
        attention = forced[0][1]
        if ctc_weight > 0:
            ctc = sum(_ctc_log_likelihoods(model, encoded, targets)
                      for model, encoded in zip(models, selected)).to(decoders.device) / len(models)
            joint = (1 - ctc_weight) * decoders + ctc_weight * ctc
            # An input none of whose proposals has a finite joint score (CTC can emit none) keeps the decoders'
            # ranking.
            finite = torch.zeros(len(proposals), dtype=torch.long, device=decoders.device)
            finite.index_add_(0, index, torch.isfinite(joint).long())
            decoders = torch.where(finite[index] > 0, joint, decoders)
        mean = decoders.tolist()
    ranked: list[list[Hypothesis]] = [[] for _ in proposals]
    for flat, (row, target) in enumerate(zip(rows, targets)):
        score = mean[flat] / _length_penalty(len(target) + 1, length_penalty)
        if not math.isfinite(score):
            continue
        weights = [] if attention is None else _reading_order_rows(models[0].config, attention[flat, :len(target)])
        ranked[row].append(Hypothesis(target, score, _source_attention(list(weights), int(lengths[row]))))
    empty = [Hypothesis([], float("-inf"), torch.zeros(0, int(length))) for length in lengths.tolist()]
    return [sorted(hypotheses, key=lambda h: -h.score)[:n_best] or [empty[row]]
            for row, hypotheses in enumerate(ranked)]


def _is_number(value) -> bool:
    """Whether ``value`` is an int or a float (a bool is neither here): check_options' number settings."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_options(model, beam_size: int = 1, max_len: int | None = None, max_len_ratio: float | None = None,
                  min_len: int = 0, length_penalty: float = 0.0, n_best: int = 1,
                  return_attention: bool = False, ctc_weight: float = 0.0) -> None:
    """Refuse ``generate``'s options that are out of range or would change nothing, whatever the inputs (translate
    asks before its batches: with no input it accepted any)."""
    for name, value, low in (("beam_size", beam_size, 1), ("n_best", n_best, 1), ("min_len", min_len, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"generate: {name} must be an integer >= {low}, got {value!r}")
    if n_best > beam_size:
        raise ValueError(f"generate: n_best ({n_best}) cannot exceed beam_size ({beam_size})")
    if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
        raise ValueError(f"generate: max_len must be a positive integer or None, got {max_len!r}")
    if max_len is not None and min_len > max_len:
        raise ValueError(f"generate: min_len ({min_len}) exceeds max_len ({max_len}): no output can have both")
    if max_len_ratio is not None and not (_is_number(max_len_ratio) and 0 < max_len_ratio < math.inf):
        raise ValueError(f"generate: max_len_ratio must be a positive finite number or None, got {max_len_ratio!r}")
    if not (_is_number(length_penalty) and -MAX_LENGTH_PENALTY <= length_penalty <= MAX_LENGTH_PENALTY):  # not NaN
        raise ValueError(f"generate: length_penalty must be a number in [-{MAX_LENGTH_PENALTY}, "
                         f"{MAX_LENGTH_PENALTY}] (GNMT's alpha; 0.6-1 are usual), got {length_penalty!r}")
    if length_penalty and beam_size == 1:
        raise ValueError(f"generate: length_penalty ({length_penalty!r}) ranks a beam's finished hypotheses; greedy "
                         "search (beam_size 1) has one, so it would change nothing: use beam_size > 1, or leave it 0")
    if not (_is_number(ctc_weight) and 0.0 <= ctc_weight < 1.0):  # NaN fails it too
        raise ValueError(f"generate: ctc_weight must be a number in [0, 1), got {ctc_weight!r}")
    if ctc_weight:
        directions = getattr(model, "directions", None)
        if beam_size == 1 and directions is None:
            raise ValueError(f"generate: ctc_weight ({ctc_weight!r}) rescores the hypotheses a search proposes; "
                             "greedy search of one model proposes one, so it would change nothing: use beam_size > "
                             "1, or leave it 0")
        for part in directions or [model]:
            headless = [index for index, member in enumerate(getattr(part, "members", [part]))
                        if member.ctc_head is None]
            if headless:
                raise ValueError(f"generate: ctc_weight ({ctc_weight!r}) scores hypotheses with the models' CTC "
                                 f"heads, and {'a model here has' if len(headless) == 1 else 'models here have'} "
                                 "none (trained with ctc_weight 0): leave it 0")
    if return_attention and model.attention is None:
        raise ValueError("generate: return_attention needs a model with attention (this one has attention='none')")


def _check_devices(model, src) -> None:
    """Decoding reads values (which tokens won, whether every row ended): a model or source on the meta device
    failed deep inside the search; a source on another device than the model, in the attention's check."""
    device = next(model.parameters()).device
    if device.type == "meta" or src.is_meta:
        raise ValueError("generate: decoding needs values, and the model or the source is on the meta device (which "
                         "holds shapes alone); the forward runs there")
    if src.device != device:
        raise ValueError(f"generate: src is on {src.device} but the model is on {device}")


def generate(model, src, src_lengths, beam_size: int = 1, max_len: int | None = None,
             max_len_ratio: float | None = None, min_len: int = 0, length_penalty: float = 0.0, n_best: int = 1,
             return_attention: bool = False, ctc_weight: float = 0.0):
    """Decode a batch of source sentences.

    Args:
        model: a Seq2Seq, an Ensemble or a BothDirections pair.
        src: [B, S] source ids, padded. src_lengths: [B] in [1, S].
        beam_size: 1 for greedy search, more for beam search.
        max_len, max_len_ratio: per-input limit on output tokens (EOS excluded): max_len, ceil(ratio * source
            length), the smaller of both when both are given, 2 * source length + 10 when neither is.
        min_len: EOS is not allowed before this many tokens; a per-input limit below it is raised to it (and
            max_len below it refused).
        length_penalty: GNMT's alpha (0 ranks by log-probability alone); beam search only.
        n_best: how many hypotheses to return per input (at most beam_size).
        return_attention: also return the attention of each input's best hypothesis.
        ctc_weight: w > 0 ranks the hypotheses the search proposes (each direction's, for a BothDirections pair) by
            (1 - w) x the decoders' log-probability + w x the CTC heads' (rescored_search), for models trained with a
            CTC head (Seq2SeqConfig.ctc_weight); beam search, or a BothDirections pair.

    Returns:
        Per input, the best hypothesis as a list of token ids without BOS and EOS, in reading order (a model with
        reverse_target writes them right to left, and they are turned back); with n_best > 1, a list of
        (tokens, score) pairs, best first (fewer than n_best only where scores stop being finite). A NaN score
        counts as -inf: an input whose every continuation scores so (a model with NaN weights) ends there, with
        the tokens it has and score -inf, possibly none. With return_attention, a pair (that list, attentions) where
        attentions[i] is a float tensor [len(tokens), source length of input i].
    """
    check_options(model, beam_size=beam_size, max_len=max_len, max_len_ratio=max_len_ratio, min_len=min_len,
                  length_penalty=length_penalty, n_best=n_best, return_attention=return_attention,
                  ctc_weight=ctc_weight)
    with _evaluating(model):
        lengths = model.check_source(src, src_lengths)
        _check_devices(model, src)
        limits = _length_limits(lengths, max_len, max_len_ratio, min_len)
        if src.shape[0] == 0:
            return ([], []) if return_attention else []
        with torch.no_grad():
            if getattr(model, "directions", None) is not None or ctc_weight:  # BothDirections, or CTC's rescoring
                best = rescored_search(getattr(model, "directions", None) or [model], src, lengths, limits, beam_size,
                                       min_len, float(length_penalty), n_best, return_attention, float(ctc_weight))
            else:
                best = _search(model, model.encode(src, lengths), lengths, limits, beam_size, min_len,
                               float(length_penalty), n_best, return_attention)
    if n_best == 1:
        hypotheses = [h[0].tokens for h in best]
    else:
        hypotheses = [[(h.tokens, h.score) for h in row] for row in best]
    if return_attention:
        return hypotheses, [h[0].attention for h in best]
    return hypotheses
