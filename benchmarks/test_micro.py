"""Micro benchmarks under pytest-benchmark: ``python -m pytest benchmarks/ --benchmark-only``.

One benchmark per (case, provider) for the ops and the decoder step at the suite's --quick sizes, on the GPU in
bfloat16 when there is one, else on the CPU in float32. Providers come from the suite (the registry's backends,
torch.compile, torch.nn, CUDA graphs): one that cannot run here is skipped with its reason, one that disagrees with
the reference fails. The timed function synchronises the device before it returns and rotates among input sets.
Not part of the test suite (pytest's testpaths is tests/).
"""

import itertools

import pytest
import torch

from s2s_fast.bench.base import LOW_PRECISION, Unavailable
from s2s_fast.bench.cases import build_cases
from s2s_fast.bench.suite import compare, rotations
from s2s_fast.bench.timing import synchronize

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
CASES = [case for case in build_cases(DEVICE, DTYPE, quick=True)
         if case.family not in ("train_step", "greedy_decode", "beam_decode")]


@pytest.mark.parametrize("case, provider", [pytest.param(case, provider, id=f"{case.name}-{provider}")
                                            for case in CASES for provider in case.providers()])
def test_micro(benchmark, case, provider):
    inputs = case.make_inputs(seed=0)
    try:
        runner = case.prepare(provider, inputs)
        expected = case.prepare("reference", inputs).results()
        gold = case.gold(inputs).results() if DTYPE in LOW_PRECISION else None
        _, mismatch, _ = compare(runner.results(), expected, gold, DTYPE)
        runners = [runner] + [case.prepare(provider, case.make_inputs(seed=k))
                              for k in range(1, rotations(case, inputs))]
    except Unavailable as reason:
        pytest.skip(str(reason))
    assert mismatch is None, f"{provider} on {case.name}: {mismatch}"
    cycle = itertools.cycle(runners)

    def timed():
        next(cycle).run()
        synchronize(DEVICE)

    benchmark.group = case.name
    benchmark.extra_info.update(provider=provider, tokens_per_call=case.tokens(), rotations=len(runners))
    benchmark(timed)
