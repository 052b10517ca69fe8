"""Tasks and data: metrics against hand-computed cases, the g2p split, token batching, vocabularies, text files."""

import re

import pytest

from s2s_fast.bench import cases
from s2s_fast.data import Vocabulary, build_task, load_task, token_batches
from s2s_fast.data import g2p
from s2s_fast.data.metrics import (bleu_and_chrf, closest_reference, exact_match_and_token_error,
                                   word_and_phoneme_error_rates)
from s2s_fast.data.parallel import read_parallel, train_sentencepiece

ARPABET = {"AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
           "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z",
           "ZH"}


def test_wer_and_per_hand_computed():
    hypotheses = [["K", "AE", "T"], ["D", "AO", "G"], ["K", "AE"], ["B", "IY", "T", "S"]]
    references = [[["K", "AE", "T"]],
                  [["D", "AA", "G"], ["D", "AO", "G"]],  # matches the second pronunciation: correct
                  [["K", "AE", "T"]],  # one deletion, reference length 3
                  [["B", "IH", "T"], ["B", "IY", "T"]]]  # closest is the second: one insertion, length 3
    rates = word_and_phoneme_error_rates(hypotheses, references)
    assert rates["wer"] == pytest.approx(2 / 4)
    assert rates["per"] == pytest.approx((0 + 0 + 1 + 1) / (3 + 3 + 3 + 3))


def test_closest_reference_ties_go_to_the_first():
    assert closest_reference(["A"], [["B"], ["B", "A"]]) == (1, 1)
    assert closest_reference(["A"], [["B", "A"], ["B"]]) == (1, 2)
    assert closest_reference([], [["A", "B"]]) == (2, 2)


def test_exact_match_and_token_error():
    rates = exact_match_and_token_error([["1", "2"], ["3"], ["4", "5", "6"]], [["1", "2"], ["3", "3"], ["4", "6"]])
    assert rates["accuracy"] == pytest.approx(1 / 3)
    assert rates["token_error"] == pytest.approx((0 + 1 + 1) / (2 + 2 + 2))


def test_bleu_and_chrf_extremes():
    same = bleu_and_chrf(["the cat sat on the mat", "a dog"], ["the cat sat on the mat", "a dog"])
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    disjoint = bleu_and_chrf(["xyz qqq"], ["the cat sat on the mat"])
    assert disjoint["bleu"] == pytest.approx(0.0) and disjoint["chrf"] < 5.0


@pytest.mark.parametrize("call", [lambda: word_and_phoneme_error_rates([["A"]], []),
                                  lambda: word_and_phoneme_error_rates([], []),
                                  lambda: word_and_phoneme_error_rates([["A"]], [[]])])
def test_metrics_reject_bad_input(call):
    with pytest.raises(ValueError):
        call()


def test_g2p_split_is_deterministic_disjoint_and_documented():
    # The documented rule (sha256 of "cmudict:" + word, mod 100) pins words to their parts for good.
    assert [g2p.split_of(w) for w in ("the", "cat", "quixotic", "cabin", "dogma")] == \
        ["train", "train", "test", "dev", "dev"]
    parts = {name: g2p.load_split(name) for name in g2p.SPLITS}
    words = {name: {word for word, _ in part} for name, part in parts.items()}
    assert not (words["train"] & words["dev"]) and not (words["train"] & words["test"])
    assert not (words["dev"] & words["test"])
    assert set().union(*words.values()) == set(g2p.lexicon())
    total = len(g2p.lexicon())
    assert 0.04 < len(words["test"]) / total < 0.06 and 0.04 < len(words["dev"]) / total < 0.06
    assert all(g2p.split_of(word) == name for name, part in parts.items() for word, _ in part)
    assert parts["test"] == g2p.load_split("test")


def test_g2p_lexicon_has_39_stress_free_phonemes_and_plain_words():
    lexicon = g2p.lexicon()
    phonemes = {p for prons in lexicon.values() for pron in prons for p in pron}
    assert phonemes == ARPABET
    assert all(g2p.WORD_PATTERN.fullmatch(word) for word in lexicon)
    assert lexicon["read"] == (("R", "EH", "D"), ("R", "IY", "D"))


def test_g2p_task_keeps_every_pronunciation_of_a_word_together(tmp_path):
    task = build_task("g2p", {}, tmp_path)
    items = task.evaluation_items("dev")
    pairs = task.training_pairs("dev")
    assert len(pairs) == sum(len(item.references) for item in items) > len(items)
    assert len(task.tgt_vocab) == 4 + 39
    # The benchmark's g2p cases state these sizes without loading CMUdict; they must stay the task's.
    assert (cases._G2P["Vs"], cases._G2P["Vt"]) == (len(task.src_vocab), len(task.tgt_vocab))
    with pytest.raises(ValueError, match="not one word"):
        task.encode_source("two words")
    with pytest.raises(ValueError, match="does not know"):
        task.encode_source("caf\u00e9")
    assert task.encode_source(" Cat\n") == task.src_vocab.encode(["c", "a", "t"])


def test_token_batches_cover_every_example_once_within_budget():
    lengths = [1, 5, 3, 8, 2, 2, 7, 30, 4, 4, 6, 1]
    batches = token_batches(lengths, 16, seed=3, epoch=1)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 16
    assert batches == token_batches(lengths, 16, seed=3, epoch=1)
    assert batches != token_batches(lengths, 16, seed=3, epoch=2)
    ordered = token_batches(lengths, 16, shuffle=False)
    flat = [lengths[i] for batch in ordered for i in batch]
    assert flat == sorted(flat)
    assert all(len(b) <= 2 for b in token_batches(lengths, 100, max_batch_size=2))
    with pytest.raises(ValueError):
        token_batches(lengths, 0)


def test_vocabulary_round_trip_and_specials():
    vocab = Vocabulary.build(["b", "a", "b"])
    assert vocab.tokens == ["<pad>", "<s>", "</s>", "<unk>", "a", "b"]
    assert vocab.encode(["a", "z"]) == [4, vocab.unk_id]
    assert vocab.decode([5, 4, 2, 5]) == ["b", "a"]
    # A pad or BOS a model emits stays visible (and counts in the scores); EOS ends the sequence.
    assert vocab.decode([5, 0, 1, 4, 2, 5]) == ["b", "<pad>", "<s>", "a"]
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])


def test_pad_or_bos_in_a_hypothesis_is_an_error_not_an_exact_match():
    task = build_task("reverse", dict(toy_symbols=4, toy_min_len=2, toy_max_len=3, toy_train_size=4,
                                      toy_eval_size=2, toy_seed=0), None)
    item = task.evaluation_items("dev")[0]
    right = task.src_vocab.encode(item.references)
    assert task.score([right], [item])["accuracy"] == 1.0
    assert task.score([[0, *right, 1]], [item])["accuracy"] == 0.0


def test_a_toy_task_refuses_its_special_tokens_as_input():
    task = build_task("reverse", dict(toy_symbols=4, toy_min_len=2, toy_max_len=3, toy_train_size=4,
                                      toy_eval_size=2, toy_seed=0), None)
    assert task.encode_source("1 2") == task.src_vocab.encode(["1", "2"])
    for text in ("<pad>", "<unk> 1", "</s> 2", "1 <s>"):
        with pytest.raises(ValueError, match="has symbols the model does not know: <"):
            task.encode_source(text)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_parallel_files_bad_input_messages(tmp_path):
    src = _write(tmp_path / "a.src", ["one", "two", "three"])
    with pytest.raises(ValueError, match="3 lines but .* has 2"):
        read_parallel(src, _write(tmp_path / "a.tgt", ["uno", "dos"]))
    with pytest.raises(ValueError, match=r"b.tgt:2: empty line"):
        read_parallel(src, _write(tmp_path / "b.tgt", ["uno", "", "tres"]))
    with pytest.raises(FileNotFoundError, match="missing.tgt"):
        read_parallel(src, str(tmp_path / "missing.tgt"))


def test_parallel_files_break_lines_where_wc_does(tmp_path):
    """Only "\\n" ends a line (CRLF too): U+2028, U+0085, a form feed or a lone "\\r" inside a sentence would
    have shifted every later line against the other file's. A byte-order mark is not part of the first line."""
    (tmp_path / "a.src").write_bytes("\ufeffone\r\ntwo\u2028half\nthree\x0cfour\n".encode())
    (tmp_path / "a.tgt").write_bytes("uno\ndos\x85medio\ntres\rcuatro".encode())
    sources, targets = read_parallel(str(tmp_path / "a.src"), str(tmp_path / "a.tgt"))
    assert sources == ["one", "two\u2028half", "three\x0cfour"]
    assert targets == ["uno", "dos\x85medio", "tres\rcuatro"]


def test_a_sentencepiece_vocabulary_too_small_for_the_text_is_one_error(tmp_path):
    _, _, options = _parallel_files(tmp_path)
    with pytest.raises(ValueError, match=r"sentencepiece could not train src.spm \(unigram, 8 pieces\) on 40 lines: "
                                         r".*raise --spm-vocab-size"):
        build_task("parallel", {**options, "spm_vocab_size": 8}, tmp_path / "vocab")


def _parallel_files(tmp_path):
    """(sources, targets, options) of a small parallel task."""
    sources = [f"the cat number {i} sat on the mat" for i in range(40)]
    targets = [f"le chat numero {i} est sur le tapis" for i in range(40)]
    options = dict(train_src=_write(tmp_path / "t.src", sources), train_tgt=_write(tmp_path / "t.tgt", targets),
                   spm_vocab_size=60, spm_model_type="unigram", max_length=100)
    return sources, targets, options


def test_parallel_task_sentencepiece_round_trip(tmp_path):
    sources, targets, options = _parallel_files(tmp_path)
    task = build_task("parallel", options, tmp_path / "vocab")
    pairs = task.training_pairs("train")
    assert len(pairs) == 40
    assert task.target_text(pairs[3][1]) == targets[3]
    assert task.source_tokens(sources[0]) and task.encode_source(sources[0]) == pairs[0][0]
    task.save(tmp_path / "saved")
    loaded = load_task(tmp_path / "saved")
    assert loaded.src_vocab == task.src_vocab and loaded.target_text(pairs[5][1]) == targets[5]
    with pytest.raises(ValueError, match="no test files"):
        task.evaluation_items("test")


def test_a_pad_or_bos_a_parallel_model_emits_stays_in_its_text(tmp_path):
    """sentencepiece drops its control pieces (<s>) from the text it gives back: a hypothesis with a BOS in it read
    and scored as one without."""
    _, targets, options = _parallel_files(tmp_path)
    task = build_task("parallel", options, tmp_path / "vocab")
    right = task.training_pairs("train")[3][1]
    for special in (task.tgt_vocab.bos_id, task.tgt_vocab.pad_id):
        symbol = task.tgt_vocab.tokens[special]
        assert task.target_text([special, *right]) == f"{symbol} {targets[3]}"
        words = [task.tgt_vocab.encode(task.processors["tgt"].encode(word, out_type=str)) for word in
                 targets[3].split()]
        middle = [*words[0], special, *[i for word in words[1:] for i in word]]
        first, rest = targets[3].split(" ", 1)
        assert task.target_text(middle) == f"{first} {symbol} {rest}"  # its own word, the others kept apart
    assert task.target_text(right + [task.tgt_vocab.eos_id, *right]) == targets[3]


def test_a_perfect_hypothesis_scores_100_whatever_characters_the_targets_hold(tmp_path):
    """The target side's sentencepiece model keeps the text as it is: with NFKC a perfect hypothesis came back with
    "..." for "…", "fi" for "ﬁ", "H" for "Ｈ", and scored BLEU 39 against the raw references."""
    words = ["the", "cat", "…", "ﬁne", "½", "Ｈello", "“quoted”", "café", "sat", "mat"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6)) for i in range(60)]
    options = dict(train_src=_write(tmp_path / "t.src", lines), train_tgt=_write(tmp_path / "t.tgt", lines),
                   dev_src=_write(tmp_path / "d.src", lines[:20]), dev_tgt=_write(tmp_path / "d.tgt", lines[:20]),
                   spm_vocab_size=60, spm_model_type="unigram", max_length=100)
    task = build_task("parallel", options, tmp_path / "vocab")
    perfect = [target for _, target in task.training_pairs("dev")]
    assert [task.target_text(h) for h in perfect] == lines[:20]
    assert task.score(perfect, task.evaluation_items("dev")) == pytest.approx({"bleu": 100.0, "chrf": 100.0})


def test_a_given_target_model_that_changes_the_text_is_noted(tmp_path):
    words = ["the", "cat", "…", "ﬁne", "sat", "mat", "on", "a"]
    lines = [" ".join(words[(i * 5 + j * 3) % len(words)] for j in range(5)) for i in range(60)]
    options = dict(train_src=_write(tmp_path / "t.src", lines), train_tgt=_write(tmp_path / "t.tgt", lines),
                   spm_vocab_size=40, spm_model_type="unigram", max_length=100)
    notes = {}
    for rule in ("nmt_nfkc", "identity"):
        model = train_sentencepiece(lines, tmp_path / rule, 40, "unigram", rule)
        notes[rule] = build_task("parallel", {**options, "tgt_spm": str(model)}, tmp_path / f"v-{rule}").notes
    changed = sum(("…" in line or "ﬁ" in line) for line in lines)
    assert notes["identity"] == [] and len(notes["nmt_nfkc"]) == 1
    assert re.match(rf"--tgt-spm \S+nmt_nfkc.model gives back {changed} of the 60 training target lines changed "
                    r"\(its normalization, or characters it lacks; e\.g\. '.*' as '.*'\): .* below 100", notes["nmt_nfkc"][0])
    assert build_task("parallel", options, tmp_path / "own").notes == []


def test_tasks_that_cannot_decode_as_one_ensemble_say_what_differs(tmp_path):
    _, _, options = _parallel_files(tmp_path)
    task = build_task("parallel", options, tmp_path / "a")
    task.save(tmp_path / "saved")
    assert task.differs_from(load_task(tmp_path / "saved"), data=True) is None
    other_model = build_task("parallel", {**options, "spm_model_type": "bpe"}, tmp_path / "b")
    # The same vocabularies with another sentencepiece model would split the source differently.
    same_pieces = type(task)(task.src_vocab, task.tgt_vocab, task.options, other_model.processors)
    assert task.differs_from(same_pieces) == "the src sentencepiece models differ"
    other_data = type(task)(task.src_vocab, task.tgt_vocab, {**task.options, "max_length": 50}, task.processors)
    assert task.differs_from(other_data) is None
    assert task.differs_from(other_data, data=True) == "the task's data settings differ (max_length)"
    g2p = build_task("g2p", {}, tmp_path / "g")
    assert task.differs_from(g2p) == "task g2p against parallel"
    assert g2p.differs_from(type(g2p)(g2p.src_vocab, Vocabulary(g2p.tgt_vocab.tokens[:-1]), {})) == \
        "the target vocabularies differ"


def _perfect_scores(task, split="train"):
    items = task.evaluation_items(split)
    pairs = task.training_pairs(split)
    return task.score([target for _, target in pairs], items)


def test_text_without_spaces_is_noted_for_bleu_and_scored_100_with_its_tokenization(tmp_path):
    """A perfect Chinese hypothesis scored BLEU 0 under 13a (no 4-gram in a line without spaces), and BLEU picks the
    best checkpoint; --bleu-tokenize zh (or char) scores it 100, and the run's log says so under 13a."""
    sources = [f"the cat number {i} sat on the mat" for i in range(40)]
    targets = [f"第{i}只猫坐在垫子上" for i in range(40)]
    options = dict(train_src=_write(tmp_path / "t.src", sources), train_tgt=_write(tmp_path / "t.tgt", targets),
                   spm_vocab_size=80, spm_model_type="unigram", max_length=100)
    task = build_task("parallel", options, tmp_path / "a")
    assert _perfect_scores(task)["bleu"] == 0.0
    assert any("hold fewer than 4 tokens under BLEU's tokenization '13a'" in note for note in task.notes)
    for tokenize in ("zh", "char"):
        task = build_task("parallel", {**options, "bleu_tokenize": tokenize}, tmp_path / tokenize)
        assert _perfect_scores(task) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
        assert not any("BLEU" in note for note in task.notes)


def test_a_source_line_its_model_makes_no_pieces_of_is_refused_with_its_place(tmp_path):
    """A line of only U+200B (removed by NFKC) reached training as an empty source and stopped it at that batch."""
    _, targets, options = _parallel_files(tmp_path)
    sources = [f"the cat number {i} sat on the mat" for i in range(40)]
    sources[6] = "\u200b"
    options["train_src"] = _write(tmp_path / "t.src", sources)
    with pytest.raises(ValueError, match=r"t\.src:7: the source sentencepiece model makes no pieces of this line"):
        build_task("parallel", options, tmp_path / "vocab")


def test_a_source_line_edited_after_training_is_named_when_the_split_is_read_again(tmp_path):
    """evaluate and --resume read a run's files again, without the check the build made: an edited line of only
    U+200B failed as "empty input", or in a batch, naming no file or line."""
    sources, _, options = _parallel_files(tmp_path)
    task = build_task("parallel", options, tmp_path / "vocab")
    sources[3] = "\u200b"
    _write(tmp_path / "t.src", sources)
    for read in (task.training_pairs, task.evaluation_items):
        with pytest.raises(ValueError, match=r"t\.src:4: the source sentencepiece model makes no pieces"):
            read("train")


def test_a_given_sentencepiece_model_is_recorded_by_its_full_path_and_a_pipe_is_refused(tmp_path, monkeypatch):
    """Two runs given one model as spm/src.model and /abs/spm/src.model could not be scored as one ensemble (their
    data settings differed); a data file that is a pipe is read again on resume, and was refused as missing."""
    import os

    _, _, options = _parallel_files(tmp_path)
    first = build_task("parallel", options, tmp_path / "first")
    first.save(tmp_path / "spm")
    monkeypatch.chdir(tmp_path)
    given = {side: f"spm/{side}.spm.model" for side in ("src", "tgt")}
    relative = build_task("parallel", {**options, "src_spm": given["src"], "tgt_spm": given["tgt"]}, tmp_path / "r")
    absolute = build_task("parallel", {**options, **{f"{side}_spm": str(tmp_path / path)
                                                     for side, path in given.items()}}, tmp_path / "a")
    assert relative.options["src_spm"] == str(tmp_path / "spm" / "src.spm.model")
    assert relative.differs_from(absolute, data=True) is None
    # A run from before the paths were recorded in full: the models are compared, not their paths.
    as_given = {f"{side}_spm": path for side, path in given.items()}
    before = type(relative)(relative.src_vocab, relative.tgt_vocab, {**relative.options, **as_given},
                            relative.processors)
    assert before.differs_from(absolute, data=True) is None
    os.mkfifo(tmp_path / "pipe.src")
    with pytest.raises(ValueError, match=r"pipe\.src: not a regular file \(a run reads its data files again"):
        read_parallel(str(tmp_path / "pipe.src"), options["train_tgt"])


def test_a_trained_target_model_that_loses_words_is_noted(tmp_path):
    """A word model with fewer pieces than the targets' words turned the missing ones into unknowns, silently."""
    _, _, options = _parallel_files(tmp_path)
    task = build_task("parallel", {**options, "spm_model_type": "word", "spm_vocab_size": 12}, tmp_path / "vocab")
    assert any(note.startswith("the trained target model (word, 12 pieces) gives back") and "Raise --spm-vocab-size"
               in note for note in task.notes)
    assert not build_task("parallel", options, tmp_path / "unigram").notes


def test_lines_longer_than_sentencepieces_default_limit_train(tmp_path):
    """sentencepiece left lines over 4,192 bytes out of its training: a corpus of them alone could not train."""
    sources = [" ".join(f"word{i}x{j}" for j in range(600)) for i in range(5)]
    options = dict(train_src=_write(tmp_path / "t.src", sources), train_tgt=_write(tmp_path / "t.tgt", sources),
                   spm_vocab_size=200, spm_model_type="unigram", max_length=100_000)
    task = build_task("parallel", options, tmp_path / "vocab")
    assert _perfect_scores(task)["chrf"] == pytest.approx(100.0)


def test_pairs_past_max_length_are_counted_and_none_left_is_an_error_naming_it(tmp_path):
    _, _, options = _parallel_files(tmp_path)
    task = build_task("parallel", {**options, "max_length": 1}, tmp_path / "vocab")
    with pytest.raises(ValueError, match="every one of the 40 train pairs is longer than --max-length 1 pieces"):
        task.training_pairs("train")
    task = build_task("parallel", options, tmp_path / "vocab2")
    limit = max(len(target) for _, target in task.training_pairs("train")) - 1
    task.options["max_length"] = limit
    kept = task.training_pairs("train")
    assert 0 < len(kept) < 40
    assert task.notes[-1] == f"--max-length {limit}: {40 - len(kept)} of the 40 train pairs are longer on a side, " \
                             "and left out"
