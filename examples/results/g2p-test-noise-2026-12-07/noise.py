"""How far apart can two g2p results on the test split be by chance? A bootstrap over the test words.

usage: python noise.py NAME=HYP_FILE ...   (HYP_FILE: an evaluation's .hyp, one "word<TAB>phonemes" line per test
word in load_split("test")'s order). For each: WER, the bootstrap standard error and 95% interval of its WER over
resampled test words (2,000 resamples, seed 0), and how often a resample reaches WER <= 23%; for each pair: the
difference and its paired bootstrap standard error (the same resampled words for both). A word counts as an error
when its hypothesis matches none of its pronunciations, as s2s_fast's scoring does."""

import sys

import numpy as np

from s2s_fast.data.g2p import load_split

RESAMPLES, SEED, AIM = 2000, 0, 23.0


def errors(path: str, test) -> np.ndarray:
    rows = [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8")]
    if len(rows) != len(test):
        raise SystemExit(f"{path}: {len(rows)} lines, the test split has {len(test)} words")
    out = []
    for (word, prons), (hyp_word, hyp) in zip(test, rows):
        if word != hyp_word:
            raise SystemExit(f"{path}: {hyp_word!r} where the test split has {word!r}")
        out.append(tuple(hyp.split()) not in {tuple(p) for p in prons})
    return np.array(out, dtype=float)


def main(args: list[str]) -> None:
    test = load_split("test")
    named = dict(arg.split("=", 1) for arg in args)
    wrong = {name: errors(path, test) for name, path in named.items()}
    picks = np.random.default_rng(SEED).integers(0, len(test), (RESAMPLES, len(test)))
    print(f"{len(test)} test words, {RESAMPLES} resamples")
    for name, e in wrong.items():
        wer = e[picks].mean(1) * 100
        low, high = np.percentile(wer, [2.5, 97.5])
        print(f"{name}: WER {100 * e.mean():.2f}%, SE {wer.std():.2f}, 95% [{low:.2f}, {high:.2f}], "
              f"resamples at or under {AIM}%: {np.mean(wer <= AIM):.3f}")
    names = list(wrong)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = wrong[a] - wrong[b]
            print(f"{a} - {b}: {100 * d.mean():+.2f} points, paired SE {100 * d[picks].mean(1).std():.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
