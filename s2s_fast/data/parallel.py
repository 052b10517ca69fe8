"""Parallel text: one sentence per line in a source file and a target file, tokenised with sentencepiece.

Sentencepiece models are trained on the training files (one per side, ``spm_vocab_size`` pieces at most) unless
given with ``src_spm`` / ``tgt_spm``; either way they are copied next to every checkpoint. Hypotheses are
detokenised by sentencepiece and scored with sacrebleu's BLEU and chrF against the raw target lines.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..files import one_line, read_text, text_lines
from .base import SPLITS, EvalItem, MissingSplit, Task
from .metrics import DEFAULT_BLEU_TOKENIZE, bleu_and_chrf, short_for_bleu
from .vocab import BOS, PAD, SPECIALS, Vocabulary

SIDES = ("src", "tgt")


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file, stripped; an empty line or a missing file is an error naming the place."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not file.is_file():
        # A pipe (<(...)) would be read once, and a run reads its data again to resume and to be scored.
        raise ValueError(f"{path}: not a regular file (a run reads its data files again when it is resumed or "
                         "evaluated; save the data to a file)")
    lines = text_lines(read_text(file))
    stripped = [line.strip() for line in lines]
    for number, line in enumerate(stripped, 1):
        if not line:
            raise ValueError(f"{path}:{number}: empty line (every line must hold a sentence)")
    if not stripped:
        raise ValueError(f"{path}: the file is empty")
    return stripped


def read_parallel(src_path: str, tgt_path: str) -> tuple[list[str], list[str]]:
    """Source and target lines, checked to be aligned (same number of lines, none empty)."""
    sources, targets = read_lines(src_path), read_lines(tgt_path)
    if len(sources) != len(targets):
        raise ValueError(f"{src_path} has {len(sources)} lines but {tgt_path} has {len(targets)}: source and target "
                         "files must be aligned line by line")
    return sources, targets


def train_sentencepiece(lines: list[str], model_prefix: Path, vocab_size: int, model_type: str,
                        normalization: str = "nmt_nfkc") -> Path:
    """Train a sentencepiece model on ``lines``; returns the .model path. ``normalization``: sentencepiece's rule
    for the text it encodes (the target side's is "identity", see ParallelTextTask.build)."""
    import sentencepiece as spm

    # sentencepiece leaves lines longer than max_sentence_length bytes (4,192 by default) out of its training, so
    # that characters found only there became unknown, and a corpus of long lines alone could not train.
    longest = max((len(line.encode("utf-8")) for line in lines), default=0)
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(model_prefix),
                                       vocab_size=vocab_size, model_type=model_type, character_coverage=1.0,
                                       hard_vocab_limit=False, minloglevel=2, normalization_rule_name=normalization,
                                       max_sentence_length=max(4192, longest + 1))
    except RuntimeError as error:  # sentencepiece's refusal, e.g. fewer pieces than the text has characters
        raise ValueError(f"sentencepiece could not train {model_prefix.name} ({model_type}, {vocab_size} pieces) "
                         f"on {len(lines)} lines: {one_line(error)} (a vocabulary needs at least the text's distinct "
                         "characters and the special pieces: raise --spm-vocab-size)") from None
    return Path(f"{model_prefix}.model")


def _processor(path: Path):
    import sentencepiece as spm

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sentencepiece model")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as error:
        if not path.is_file():  # removed meanwhile (a checkpoint pruned by a run that is training): not damage
            raise FileNotFoundError(f"{path}: removed while it was read") from None
        raise ValueError(f"{path}: not a sentencepiece model ({error})") from None


def _text_changes(processor, lines: list[str], name: str, advice: str) -> list[str]:
    """A note if the target sentencepiece model ``processor`` gives back any of the target ``lines`` changed beyond
    their spaces (its normalization, NFKC say, or characters or words it lacks): a model trained on its pieces writes
    the changed text, which BLEU and chrF score against the lines as they are."""
    changed = [(line, text) for line in lines
               if (text := processor.decode(processor.encode(line))).split() != line.split()]
    if not changed:
        return []
    line, text = changed[0]
    return [f"{name} gives back {len(changed)} of the {len(lines)} training target lines changed (its normalization, "
            f"or characters it lacks; e.g. {line!r} as {text!r}): the model learns the changed text, and BLEU and "
            "chrF score it against the lines as they are, so even a perfect model scores below 100 on such lines. "
            f"{advice}"]


def _pieces_vocabulary(processor) -> Vocabulary:
    """Our specials, then sentencepiece's ordinary pieces in its order (its own control and unknown pieces are ours)."""
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())
              if not (processor.is_control(i) or processor.is_unknown(i))]
    return Vocabulary([*SPECIALS, *(piece for piece in pieces if piece not in SPECIALS)])


class ParallelTextTask(Task):
    """Sentence pairs from plain-text files, subword-tokenised; options hold the absolute data paths."""

    name = "parallel"
    primary_metric = "bleu"
    higher_is_better = True
    READS = ("max_length",)
    # The sentencepiece models given are compared by their contents (differs_from): runs given one model by two
    # paths, or from before the paths were recorded in full, are one ensemble.
    NAMES_OF_FILES_COMPARED = ("src_spm", "tgt_spm")

    def __init__(self, src_vocab, tgt_vocab, options, processors):
        super().__init__(src_vocab, tgt_vocab, options)
        self.processors = processors

    @classmethod
    def build(cls, options: dict, workdir: Path) -> "ParallelTextTask":
        if not options.get("train_src") or not options.get("train_tgt"):
            raise ValueError("task parallel needs --train-src and --train-tgt (plain-text files, one sentence per "
                             "line)")
        resolved = dict(options)
        for split in SPLITS:
            given = [options.get(f"{split}_{side}") for side in SIDES]
            if any(given) and not all(given):
                raise ValueError(f"task parallel: give both --{split}-src and --{split}-tgt, or neither")
            for side, path in zip(SIDES, given):
                resolved[f"{split}_{side}"] = str(Path(path).resolve()) if path else None
        by_split = {split: read_parallel(resolved[f"{split}_src"], resolved[f"{split}_tgt"]) for split in SPLITS
                    if resolved[f"{split}_src"]}
        sources, targets = by_split["train"]
        workdir.mkdir(parents=True, exist_ok=True)
        processors = {}
        for side, lines in zip(SIDES, (sources, targets)):
            given = options.get(f"{side}_spm")
            model = workdir / f"{side}.spm.model"
            if given:
                _processor(Path(given))
                shutil.copyfile(given, model)
                resolved[f"{side}_spm"] = str(Path(given).resolve())  # where it came from, for the record
            else:
                # The target side keeps its text as it is: hypotheses are scored against the raw target lines, and
                # NFKC (sentencepiece's default, kept for the source) turned a perfect one's "…" into "...", "ﬁ" into
                # "fi": BLEU 39 for the targets' own pieces on such text.
                model = train_sentencepiece(lines, workdir / f"{side}.spm", options["spm_vocab_size"],
                                            options["spm_model_type"], "identity" if side == "tgt" else "nmt_nfkc")
            processors[side] = _processor(model)
        task = cls(_pieces_vocabulary(processors["src"]), _pieces_vocabulary(processors["tgt"]), resolved, processors)
        for split, (split_sources, _) in by_split.items():
            task._check_sources_have_pieces(split, split_sources)
        task.notes += task._notes_on_the_targets(targets, by_split.get("dev", by_split["train"])[1])
        return task

    def _check_sources_have_pieces(self, split: str, sources: list[str]) -> None:
        """Every source line of a split is some pieces: one the source model's normalization empties (only U+200B,
        say) reached training as an empty source, which stopped it at that batch."""
        for number, line in enumerate(sources, 1):
            if not self.source_tokens(line):
                raise ValueError(f"{self.options[f'{split}_src']}:{number}: the source sentencepiece model makes no "
                                 f"pieces of this line ({line!r}: its normalization removes every character)")

    def _notes_on_the_targets(self, targets: list[str], references: list[str]) -> list[str]:
        """Notes on what would keep a perfect model's scores below 100: a target model that gives training target
        lines back changed, BLEU's tokenization finding no 4-gram in most references (``references``: dev's)."""
        options = self.options
        if options.get("tgt_spm"):
            notes = _text_changes(self.processors["tgt"], targets, f"--tgt-spm {options['tgt_spm']}",
                                  "A sentencepiece model trained with normalization_rule_name=identity and "
                                  "character_coverage=1.0 keeps them, as the one trained when --tgt-spm is not "
                                  "given does.")
        else:
            notes = _text_changes(self.processors["tgt"], targets,
                                  f"the trained target model ({options['spm_model_type']}, "
                                  f"{options['spm_vocab_size']} pieces)",
                                  "Raise --spm-vocab-size, or train unigram or bpe pieces, which spell any word.")
        tokenize = self._bleu_tokenize()
        short = short_for_bleu(references, tokenize)
        if short * 2 > len(references):
            notes.append(f"{short} of the {len(references)} references hold fewer than 4 tokens under BLEU's "
                         f"tokenization {tokenize!r}: BLEU, which picks the best checkpoint, counts 4-grams in the "
                         "others alone (with none, it reads 0 whatever the output); text without spaces, such as "
                         "Chinese or Japanese, wants --bleu-tokenize zh or char")
        return notes

    @classmethod
    def load(cls, src_vocab, tgt_vocab, options, directory: Path) -> "ParallelTextTask":
        return cls(src_vocab, tgt_vocab, options,
                   {side: _processor(directory / f"{side}.spm.model") for side in SIDES})

    def differs_from(self, other: Task, data: bool = False) -> str | None:
        reason = super().differs_from(other, data)
        if reason is None:
            for side in SIDES:
                if (other.processors[side].serialized_model_proto()
                        != self.processors[side].serialized_model_proto()):
                    return f"the {side} sentencepiece models differ"
        return reason

    def save(self, directory: Path) -> None:
        super().save(directory)
        for side in SIDES:
            (Path(directory) / f"{side}.spm.model").write_bytes(self.processors[side].serialized_model_proto())

    def _split_lines(self, split: str) -> tuple[list[str], list[str]]:
        if split not in SPLITS:
            raise ValueError(f"parallel: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        src, tgt = self.options.get(f"{split}_src"), self.options.get(f"{split}_tgt")
        if not src:
            raise MissingSplit(f"parallel: no {split} files were given at training time (--{split}-src/--{split}-tgt)")
        sources, targets = read_parallel(src, tgt)
        # As when the run was built: the files may have changed since, and a line that makes no pieces is named here,
        # not met as an empty source in a batch.
        self._check_sources_have_pieces(split, sources)
        return sources, targets

    def training_pairs(self, split: str):
        sources, targets = self._split_lines(split)
        limit = self.options["max_length"]
        pairs = []
        for source, target in zip(sources, targets):
            src_ids = self.src_vocab.encode(self.source_tokens(source))
            tgt_ids = self.tgt_vocab.encode(self.processors["tgt"].encode(target, out_type=str))
            if len(src_ids) <= limit and len(tgt_ids) <= limit:
                pairs.append((src_ids, tgt_ids))
        if len(pairs) < len(sources):
            if not pairs:
                raise ValueError(f"parallel: every one of the {len(sources)} {split} pairs is longer than --max-length "
                                 f"{limit} pieces on a side")
            self.notes.append(f"--max-length {limit}: {len(sources) - len(pairs)} of the {len(sources)} {split} pairs "
                              "are longer on a side, and left out")
        return pairs

    def evaluation_items(self, split: str):
        sources, targets = self._split_lines(split)
        return [EvalItem(source, self.encode_source(source), target) for source, target in zip(sources, targets)]

    def source_tokens(self, text: str) -> list[str]:
        return self.processors["src"].encode(text.strip(), out_type=str)

    def encode_source(self, text: str) -> list[int]:
        tokens = self.source_tokens(text)
        if not tokens:
            raise ValueError("empty input")
        return self.src_vocab.encode(tokens)

    def target_text(self, ids) -> str:
        """The detokenised text of target ids; a pad or BOS token the model emits stays, as a word of its own (its
        symbol between spaces), so the scores count it: sentencepiece drops its control pieces, <s> among them, from
        the text it gives back."""
        words, run = [], []
        for token in self.target_tokens(ids) + [None]:
            if token is None or token in (PAD, BOS):
                words.append(self.processors["tgt"].decode_pieces(run))
                run = []
                if token is not None:
                    words.append(token)
            else:
                run.append(token)
        return " ".join(word for word in words if word)

    def score(self, hypotheses, items):
        return bleu_and_chrf([self.target_text(h) for h in hypotheses], [item.references for item in items],
                             self._bleu_tokenize())

    def _bleu_tokenize(self) -> str:
        """BLEU's tokenization for this task (a task saved before --bleu-tokenize existed: sacrebleu's default)."""
        return self.options.get("bleu_tokenize", DEFAULT_BLEU_TOKENIZE)

    def format_metrics(self, metrics: dict) -> str:
        return f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}"
