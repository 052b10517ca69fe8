"""Metrics of the tasks: word and phoneme error rates (g2p), BLEU and chrF (text), exact match (toy tasks)."""

from __future__ import annotations

from typing import Sequence

import editdistance


def _check_aligned(hypotheses: Sequence, references: Sequence) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"metrics: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("metrics: nothing to score (no hypotheses)")


def closest_reference(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[int, int]:
    """(edit distance, reference length) to the reference closest to ``hypothesis``; ties go to the first one."""
    if not references:
        raise ValueError("metrics: every hypothesis needs at least one reference")
    return min(((editdistance.eval(list(hypothesis), list(reference)), len(reference)) for reference in references),
               key=lambda pair: pair[0])


def word_and_phoneme_error_rates(hypotheses: Sequence[Sequence[str]],
                                 references: Sequence[Sequence[Sequence[str]]]) -> dict:
    """g2p metrics, as fractions.

    Args:
        hypotheses: per word, the predicted phonemes. references: per word, its pronunciations (each a phoneme list).

    Returns:
        {"wer": fraction of words whose prediction equals none of their references,
         "per": sum over words of the edit distance to the closest reference / sum of those references' lengths}.
    """
    _check_aligned(hypotheses, references)
    wrong_words = edits = length = 0
    for hypothesis, word_references in zip(hypotheses, references):
        distance, reference_length = closest_reference(hypothesis, word_references)
        wrong_words += distance > 0
        edits += distance
        length += reference_length
    return {"wer": wrong_words / len(hypotheses), "per": edits / max(length, 1)}


def exact_match_and_token_error(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict:
    """Toy-task metrics, as fractions: exact sequence match, and token edit distance / reference tokens."""
    _check_aligned(hypotheses, references)
    rates = word_and_phoneme_error_rates(hypotheses, [[reference] for reference in references])
    return {"accuracy": 1.0 - rates["wer"], "token_error": rates["per"]}


# sacrebleu's tokenizations of BLEU that need nothing beyond sacrebleu itself: 13a (its default: spaces and
# punctuation), intl (Unicode punctuation and symbols), zh (each Chinese character a token), char (every character a
# token), none (the text as it is split at spaces).
BLEU_TOKENIZE = ("13a", "intl", "zh", "char", "none")
DEFAULT_BLEU_TOKENIZE = BLEU_TOKENIZE[0]


def bleu_and_chrf(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = DEFAULT_BLEU_TOKENIZE) -> dict:
    """Corpus BLEU (tokenised by sacrebleu's ``tokenize``, one of BLEU_TOKENIZE) and chrF, of detokenised text, on a
    0-100 scale."""
    import sacrebleu

    _check_aligned(hypotheses, references)
    if tokenize not in BLEU_TOKENIZE:
        raise ValueError(f"bleu_and_chrf: tokenize must be one of {', '.join(BLEU_TOKENIZE)}, got {tokenize!r}")
    return {"bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score,
            "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score}


def short_for_bleu(lines: Sequence[str], tokenize: str = DEFAULT_BLEU_TOKENIZE) -> int:
    """How many of ``lines`` hold fewer than 4 tokens under BLEU's ``tokenize``: such a reference has no 4-gram, and
    a corpus of them scores BLEU 0 even for output that matches it exactly (text without spaces, such as Chinese or
    Japanese, under 13a)."""
    from sacrebleu.metrics.bleu import BLEU

    tokenizer = BLEU(tokenize=tokenize).tokenizer
    return sum(len(tokenizer(line).split()) < 4 for line in lines)
