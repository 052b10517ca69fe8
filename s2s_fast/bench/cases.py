"""The benchmark list: which cases run at which sizes, in full mode and with --quick, and the issue's targets.

Full mode spans decoding sizes (B=1) to large training sizes (B=64-256, T=64-128, hidden 512-1024); the cases named
by a target are at exactly the target's sizes. --quick runs one small size per case so that it finishes in minutes
on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Case
from .models import ModelCase
from .ops import OpCase

_TRANSLATION = {"model": "translation", "Vs": 8000, "Vt": 8000}
# CMUdict grapheme-to-phoneme as `s2s-fast train --task g2p` builds it: 26 letters, the apostrophe and 4 specials
# in; 39 phonemes (stress removed) and 4 specials out.
_G2P = {"model": "g2p", "Vs": 31, "Vt": 43}


@dataclass(frozen=True)
class Target:
    """A goal of issue 6, stated for an H100 in bf16: the case that measures it and the ratios a fused provider
    (triton, cuda, or either with CUDA graphs) must reach there."""

    key: str
    case_name: str
    text: str
    min_speedup_vs_reference: float | None = None
    min_speedup_vs_compile: float | None = None
    max_peak_memory_vs_reference: float | None = None
    min_speedup_vs_torch_nn: float | None = None


TARGETS = (
    Target("attention", "attention_many.fwd_bwd[B=64,Tq=64,Tk=64,A=512,Dv=512]",
           "fused additive attention forward+backward at B=64, Tq=Tk=64, A=512: at least 5x reference eager and 2x "
           "torch.compile, with at most 1/8 of the reference's peak memory",
           min_speedup_vs_reference=5.0, min_speedup_vs_compile=2.0, max_peak_memory_vs_reference=1 / 8),
    Target("decoder_step", "decoder_step.fwd[model=translation,Vs=8000,Vt=8000,B=64,S=50]",
           "one decoder step (LSTM cell + attention + output projection, B=64): at least 3x reference eager",
           min_speedup_vs_reference=3.0),
    Target("lstm_layer", "lstm_layer.fwd_bwd[T=64,B=64,H=512]",
           "LSTM layer forward+backward at B=64, T=64, H=512: at least as fast as cuDNN",
           min_speedup_vs_torch_nn=1.0),
    Target("train_step", "train_step.train[model=translation,Vs=8000,Vt=8000,B=64,S=50,T=50]",
           "end-to-end translation-sized training step: at least 2x reference eager",
           min_speedup_vs_reference=2.0),
)
TARGET_DEVICE = "H100"
TARGET_DTYPE = torch.bfloat16

_FULL = [
    ("attention_one_query", ("fwd", "fwd_bwd"), [dict(B=1, Tk=50, A=512, Dv=512), dict(B=64, Tk=64, A=512, Dv=512),
                                                 dict(B=256, Tk=128, A=1024, Dv=1024)]),
    ("attention_many", ("fwd", "fwd_bwd"), [dict(B=8, Tq=32, Tk=32, A=256, Dv=256),
                                            dict(B=32, Tq=64, Tk=64, A=256, Dv=256),
                                            dict(B=64, Tq=64, Tk=64, A=512, Dv=512),
                                            dict(B=128, Tq=128, Tk=128, A=512, Dv=512)]),
    # B = 8 and 16 sit either side of the cuda cell's fused-gates limit (its two variants are timed side by side).
    ("lstm_cell", ("fwd",), [dict(B=1, H=512), dict(B=8, H=512), dict(B=16, H=512), dict(B=64, H=512),
                             dict(B=256, H=1024)]),
    ("lstm_cell", ("fwd_bwd",), [dict(B=64, H=512)]),
    ("gru_cell", ("fwd",), [dict(B=1, H=512), dict(B=64, H=512), dict(B=256, H=1024)]),
    ("gru_cell", ("fwd_bwd",), [dict(B=64, H=512)]),
    # H = 256 and 512 sit either side of the Triton layers' persistent-schedule threshold (both schedules timed).
    ("lstm_layer", ("fwd", "fwd_bwd"), [dict(T=64, B=1, H=512), dict(T=64, B=8, H=256), dict(T=64, B=64, H=512),
                                        dict(T=128, B=256, H=1024)]),
    ("gru_layer", ("fwd", "fwd_bwd"), [dict(T=64, B=1, H=512), dict(T=64, B=8, H=256), dict(T=64, B=64, H=512)]),
    ("decoder_step", ("fwd",), [dict(_TRANSLATION, B=1, S=50), dict(_TRANSLATION, B=64, S=50)]),
    ("train_step", ("train",), [dict(_G2P, B=128, S=16, T=16), dict(_G2P, cell="gru", B=128, S=16, T=16),
                                dict(_TRANSLATION, B=64, S=50, T=50)]),
    ("greedy_decode", ("decode",), [dict(_TRANSLATION, B=64, S=50, L=50)]),
    ("beam_decode", ("decode",), [dict(_TRANSLATION, B=16, S=50, L=50, K=5)]),
]

_QUICK = [
    ("attention_one_query", ("fwd", "fwd_bwd"), [dict(B=8, Tk=32, A=128, Dv=128)]),
    ("attention_many", ("fwd", "fwd_bwd"), [dict(B=8, Tq=32, Tk=32, A=128, Dv=128)]),
    ("lstm_cell", ("fwd",), [dict(B=8, H=256)]),
    ("gru_cell", ("fwd",), [dict(B=8, H=256)]),
    ("lstm_layer", ("fwd", "fwd_bwd"), [dict(T=32, B=8, H=256)]),
    ("gru_layer", ("fwd", "fwd_bwd"), [dict(T=32, B=8, H=256)]),
    ("decoder_step", ("fwd",), [dict(_TRANSLATION, B=4, S=8)]),
    ("train_step", ("train",), [dict(_G2P, B=16, S=8, T=8), dict(_TRANSLATION, B=8, S=8, T=8)]),
    ("greedy_decode", ("decode",), [dict(_TRANSLATION, B=4, S=8, L=8)]),
    ("beam_decode", ("decode",), [dict(_TRANSLATION, B=2, S=8, L=8, K=3)]),
]

_MODEL_FAMILIES = ("decoder_step", "train_step", "greedy_decode", "beam_decode")


def build_cases(device: torch.device, dtype: torch.dtype, quick: bool) -> list[Case]:
    """Every case of the chosen mode, in report order; the cases a target names carry its text."""
    targets = {target.case_name: target.text for target in TARGETS}
    cases: list[Case] = []
    for family, directions, sizes_list in _QUICK if quick else _FULL:
        kind = ModelCase if family in _MODEL_FAMILIES else OpCase
        for sizes in sizes_list:
            for direction in directions:
                case = kind(family, direction, dict(sizes), dtype, device)
                case.target = targets.get(case.name)
                cases.append(case)
    return cases
