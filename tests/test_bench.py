"""The benchmark suite on the CPU at tiny budgets: record schema, statuses, floors, saved-for-backward, the CLI.

No timing is asserted: only that the suite measures, checks and reports what it claims to.
"""

import dataclasses
import json
import re
import math
import sys
import types

import pytest
import torch

from s2s_fast import backends, reference
from s2s_fast.backends import float32_matmul_precision
from s2s_fast.bench import STATUSES
from s2s_fast.bench.base import GRAPH_SUFFIX
from s2s_fast.bench.cases import TARGETS, build_cases
from s2s_fast.bench.floors import MachineRates, Work, count_work, floor_seconds, measure_rates
from s2s_fast.bench.ops import OpCase
from s2s_fast.bench.report import evaluate_targets, metadata
from s2s_fast.bench import suite, timing
from s2s_fast.bench.suite import SuiteOptions, apply_floors, compare, run_suite, select
from s2s_fast.bench.timing import TimingPolicy, saved_for_backward_bytes
from s2s_fast.cli import main
from s2s_fast.cuda import compiled as cuda_compiled
from s2s_fast.testing import checked_dtype

CPU = torch.device("cpu")
TINY = TimingPolicy(warmup_s=0.0, budget_s=0.005, min_reps=2, max_reps=3)
RATES = MachineRates(copy_bytes_per_s=1e10, special_functions_per_s=1e9, matmul_flops_per_s=1e11,
                     matmul_dtype="float32", methods={"copy": "fixed", "special_functions": "fixed",
                                                      "matmul": "fixed"})
REQUIRED = {"benchmark": str, "provider": str, "status": str, "median_ms": (float, type(None)),
            "tokens_per_s": (float, type(None)), "speedup_vs_reference": (float, type(None)),
            "peak_memory_bytes": (int, type(None)), "saved_for_backward_bytes": (int, type(None)), "device": str,
            "torch_version": str, "triton_version": (str, type(None)), "git_commit": str, "date": str}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread, as `s2s-fast bench` uses on a CPU: on a shared machine more threads stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(pattern, providers=None, dtype=torch.float32, quick=True, progress=None):
    cases = select(build_cases(CPU, dtype, quick), pattern)
    assert cases, pattern
    records = run_suite(cases, SuiteOptions(policy=TINY, providers=providers, log=lambda line: None,
                                            progress=progress))
    apply_floors(records, RATES)
    return records


def _record(records, benchmark_prefix, provider):
    matches = [r for r in records if r["benchmark"].startswith(benchmark_prefix) and r["provider"] == provider]
    assert len(matches) == 1, (benchmark_prefix, provider, [(r["benchmark"], r["provider"]) for r in records])
    return matches[0]


def test_measured_rates_are_positive_and_work_is_counted():
    rates = measure_rates(CPU, torch.float32, quick=True)
    for value in (rates.copy_bytes_per_s, rates.special_functions_per_s, rates.matmul_flops_per_s):
        assert math.isfinite(value) and value > 0
    assert set(rates.methods) >= {"copy", "special_functions", "matmul"}
    x, w = torch.randn(6, 5), torch.randn(5, 4)
    specials, flops = count_work(lambda: torch.tanh(x @ w).sigmoid().exp())
    assert specials == 3 * 6 * 4 and flops == 2 * 6 * 5 * 4
    seconds, bound = floor_seconds(Work(bytes=10**10, special_functions=10**6, matmul_flops=10**6), RATES)
    assert bound == "memory" and seconds == pytest.approx(1.0)
    seconds, bound = floor_seconds(Work(bytes=1, special_functions=3 * 10**9, matmul_flops=10**6), RATES)
    assert bound == "special functions" and seconds == pytest.approx(3.0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_the_cpu_matmul_rate_is_the_faster_of_torch_mm_and_onednn(monkeypatch):
    """On a CPU torch.mm goes through MKL, slower than oneDNN off Intel's CPUs: the ceiling is the faster of the two
    (timings replaced here: tests never assert speed)."""
    from s2s_fast.bench import floors

    for mm_s, onednn_s, through in ((2.0, 1.0, True), (1.0, 2.0, False)):
        times = iter((mm_s, onednn_s))
        monkeypatch.setattr(floors, "_seconds", lambda run, device: (run(0), next(times))[1])
        rate, method = floors.measure_matmul_rate(CPU, torch.float32, quick=True)
        assert rate == pytest.approx(2 * 768**3 / min(mm_s, onednn_s))
        assert ("oneDNN" in method) == through


def test_saved_for_backward_counts_each_storage_once_and_leaves_out_owned_tensors():
    x = torch.randn(8, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    # tanh saves its output; mul saves that output again and w (owned): one storage of 8*16 floats.
    assert saved_for_backward_bytes(lambda: torch.tanh(x) * w, [x, w]) == 8 * 16 * 4
    # A saved view keeps its whole storage alive, and counts it.
    assert saved_for_backward_bytes(lambda: x.exp()[:2] * w[:2], [x, w]) == 8 * 16 * 4
    assert saved_for_backward_bytes(lambda: x * 2.0, [x]) == 0


def test_compare_applies_dtype_tolerances_and_the_low_precision_rule():
    want = {"out": torch.randn(64)}
    assert compare({"out": want["out"].clone()}, want, None, torch.float32)[1] is None
    assert "disagrees" in compare({"out": want["out"] + 0.1}, want, None, torch.float32)[1]
    assert "missing" in compare({}, want, None, torch.float32)[1]
    nan = want["out"].clone()
    nan[3] = float("nan")
    assert compare({"out": nan}, want, None, torch.float32)[1] is not None
    gold = {"out": torch.randn(64, dtype=torch.float64)}
    reference_bf16 = {"out": gold["out"] + 0.3}
    within_twice = {"out": gold["out"] - 0.5}
    beyond_twice = {"out": gold["out"] + 0.7}
    assert compare(within_twice, reference_bf16, lambda: gold, torch.bfloat16)[1] is None
    assert compare(beyond_twice, reference_bf16, lambda: gold, torch.bfloat16)[1] is not None
    # float32 too: outside the elementwise tolerance of the reference but as close to the float64 one (a long sum).
    exact = {"out": torch.full((4,), 1000.0, dtype=torch.float64)}
    reference_f32 = {"out": (exact["out"] + 0.3).float()}
    as_close = {"out": (exact["out"] - 0.4).float()}
    assert compare(as_close, reference_f32, None, torch.float32)[1] is not None
    assert compare(as_close, reference_f32, lambda: exact, torch.float32)[1:] == (None, None)


def test_compare_times_a_less_accurate_float32_result_with_a_note_and_fails_a_wrong_one():
    # Past twice the reference's error against float64, but within float32's rtol of it: less accurate, not wrong
    # (torch's CPU LSTM bias gradients at long sums); a result past rtol is wrong.
    exact = {"grad": torch.linspace(-1000.0, 1000.0, 64, dtype=torch.float64)}
    reference = {"grad": (exact["grad"] + 1e-4).float()}
    less_accurate = {"grad": (exact["grad"] + 0.05).float()}
    wrong = {"grad": (exact["grad"] + 0.5).float()}
    worst, mismatch, note = compare(less_accurate, reference, lambda: exact, torch.float32)
    assert mismatch is None and worst > 0
    assert note.startswith("grad less accurate than the reference: its error against the torch.float64 result is")
    worst, mismatch, note = compare(wrong, reference, lambda: exact, torch.float32)
    assert note is None and "disagrees with the reference" in mismatch and "allowed: 2x" in mismatch
    # Low precision keeps the strict rule: a bf16 result past twice the reference's error fails.
    # (off by 1 at an element of magnitude 1: 1% of the largest magnitude, within bf16's rtol of 5%)
    exact = {"grad": torch.tensor([100.0, 1.0], dtype=torch.float64)}
    beyond = {"grad": torch.tensor([100.0, 2.0])}
    assert compare(beyond, {"grad": exact["grad"].bfloat16()}, lambda: exact, torch.bfloat16)[1] is not None
    assert compare(beyond, {"grad": exact["grad"].float()}, lambda: exact, torch.float32)[1] is not None


def test_a_matmul_precision_checks_float32_results_at_its_products_tolerance():
    """At torch.set_float32_matmul_precision("medium") float32 products may run in bfloat16: such a result lies past
    float32's tolerance of the reference and past twice its error, but within bfloat16's; a wrong one fails at
    either."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 256, generator=gen), torch.randn(256, 128, generator=gen)
    exact = {"out": x.double() @ w.double()}
    reference = {"out": x @ w}
    rounded = {"out": x.bfloat16().float() @ w.bfloat16().float()}
    wrong = {"out": rounded["out"] + 0.05 * rounded["out"].abs().max()}
    assert checked_dtype(torch.float32, CPU) == torch.float32
    assert compare(rounded, reference, lambda: exact, torch.float32)[1] is not None
    with float32_matmul_precision("medium"):  # on a GPU medium is TF32, whose mantissa is float16's
        medium = checked_dtype(torch.float32, CPU)
        assert checked_dtype(torch.float32, torch.device("cuda")) == torch.float16
        assert checked_dtype(torch.bfloat16, CPU) == torch.bfloat16
    with float32_matmul_precision("high"):
        assert checked_dtype(torch.float32, CPU) == torch.float16
    assert medium == torch.bfloat16
    assert compare(rounded, reference, lambda: exact, medium)[1:] == (None, None)
    assert compare(wrong, reference, lambda: exact, medium)[1] is not None


def test_a_run_at_matmul_precision_medium_checks_bf16_products_and_names_the_setting(tmp_path, capsys,
                                                                                     bf16_products):
    """The cpu kernels' products in bfloat16 fail float32's check and pass the check of --matmul-precision medium;
    the CLI holds the setting for the run, names it in every output and puts the process's back."""
    cases = select(build_cases(CPU, torch.float32, True), r"^lstm_cell\.fwd\[")
    for precision, status in ((None, "failed"), ("medium", "ok")):
        with float32_matmul_precision(precision):
            records = run_suite(cases, SuiteOptions(policy=TINY, providers=["cpu"], log=lambda line: None))
        assert _record(records, "lstm_cell.fwd", "cpu")["status"] == status, (precision, records)
    out = tmp_path / "results"
    assert main(["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--filter", r"^lstm_cell\.fwd\[",
                 "--providers", "cpu", "--matmul-precision", "medium"]) == 0
    label = "float32, float32 matmul precision medium (the cpu backend's products in bfloat16: yes)"
    printed = capsys.readouterr().out
    assert label in printed and label in (out / "results.md").read_text()
    assert "in float32 (float32 matmul precision medium)" in printed  # the floor's matmul rate
    records = json.loads((out / "results.json").read_text())
    assert {(r["provider"], r["status"], r["matmul_precision"]) for r in records} == {("reference", "ok", "medium"),
                                                                                     ("cpu", "ok", "medium")}
    assert torch.get_float32_matmul_precision() == "highest"
    assert main(["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--filter", "gru_cell",
                 "--providers", "torch.nn"]) == 0
    assert "matmul precision" not in capsys.readouterr().out
    assert {r["matmul_precision"] for r in json.loads((out / "results.json").read_text())} == {"highest"}
    import s2s_fast.bench as bench

    with pytest.raises(ValueError, match="matmul precision must be one of highest, high, medium, got 'low'"):
        bench.run_benchmarks(quick=True, device="cpu", output_dir=tmp_path / "low", pattern="gru_cell",
                             matmul_precision="low")
    assert not (tmp_path / "low").exists()


def test_every_target_has_its_case_at_the_stated_sizes_and_dtype():
    cases = {case.name: case for case in build_cases(torch.device("cpu"), torch.bfloat16, quick=False)}
    for target in TARGETS:
        assert cases[target.case_name].target == target.text
        assert cases[target.case_name].dtype == torch.bfloat16
    assert cases["attention_many.fwd_bwd[B=64,Tq=64,Tk=64,A=512,Dv=512]"].sizes == dict(B=64, Tq=64, Tk=64, A=512,
                                                                                        Dv=512)
    assert cases["lstm_layer.fwd_bwd[T=64,B=64,H=512]"].sizes == dict(T=64, B=64, H=512)
    train = cases["train_step.train[model=translation,Vs=8000,Vt=8000,B=64,S=50,T=50]"]
    assert train.sizes["B"] == 64 and train.sizes["T"] == 50
    families = {case.family for case in cases.values()}
    assert families >= {"attention_one_query", "attention_many", "lstm_cell", "gru_cell", "lstm_layer",
                        "decoder_step", "train_step", "greedy_decode", "beam_decode"}


def test_the_g2p_training_step_is_timed_with_lstm_and_with_gru_cells():
    cases = {case.name: case for case in build_cases(torch.device("cpu"), torch.float32, quick=False)}
    lstm = cases["train_step.train[model=g2p,Vs=31,Vt=43,B=128,S=16,T=16]"]
    gru = cases["train_step.train[model=g2p,Vs=31,Vt=43,cell=gru,B=128,S=16,T=16]"]
    assert lstm._config("auto").cell == "lstm" and gru._config("auto").cell == "gru"
    assert gru._config("cpu") == dataclasses.replace(lstm._config("cpu"), cell="gru")


def _synthetic(benchmark, provider, median_ms, peak=None, status="ok"):
    return {"benchmark": benchmark, "provider": provider, "status": status, "reason": None, "median_ms": median_ms,
            "peak_memory_bytes": peak, "saved_for_backward_bytes": None, "dtype": "bfloat16",
            "speedup_vs_reference": None}


def test_targets_compare_fused_providers_with_the_stated_baselines():
    attention, layer = TARGETS[0].case_name, TARGETS[2].case_name
    records = [_synthetic(attention, "reference", 10.0, peak=800), _synthetic(attention, "torch.compile", 4.0),
               _synthetic(attention, "triton", 1.5, peak=50), _synthetic(attention, "cuda", 2.0, peak=400),
               _synthetic(layer, "reference", 9.0), _synthetic(layer, "torch.nn", 2.0), _synthetic(layer, "cuda", 3.0)]
    for record in records:
        record["speedup_vs_reference"] = (10.0 if record["benchmark"] == attention else 9.0) / record["median_ms"]
    evaluations = {e["target"]: e for e in evaluate_targets(records, {"device": "NVIDIA H100 80GB HBM3",
                                                                             "device_type": "cuda"})}
    triton, cuda = evaluations["attention"]["providers"]
    assert [c["met"] for c in triton["checks"]] == [True, True, True]
    assert [c["met"] for c in cuda["checks"]] == [True, True, False]
    assert evaluations["attention"]["on_target_machine"]
    (layer_cuda,) = evaluations["lstm_layer"]["providers"]
    assert layer_cuda["checks"][0]["value"] == pytest.approx(2.0 / 3.0) and layer_cuda["checks"][0]["met"] is False
    assert evaluations["train_step"]["summary"].startswith("not run")


def test_records_have_the_schema_and_unavailable_providers_are_listed_with_a_reason():
    partial = []
    records = _run(r"lstm_cell\.fwd|attention_one_query\.fwd_bwd", providers=["torch.nn", "cuda"],
                   progress=lambda so_far: partial.append(len(so_far)))
    assert partial == [2, 5]  # after each case (attention: no torch.nn provider), for partial results
    for record in records:
        assert record["status"] in STATUSES
        for key in ("benchmark", "provider", "status", "median_ms", "tokens_per_s", "speedup_vs_reference",
                    "peak_memory_bytes", "saved_for_backward_bytes"):
            assert key in record
        if record["status"] == "ok":
            assert record["median_ms"] > 0 and record["tokens_per_s"] > 0 and record["percent_of_floor"] > 0
            assert record["floor_bound"] in ("memory", "special functions", "matmul")
        else:
            assert record["reason"] and record["median_ms"] is None
    cell_reference = _record(records, "lstm_cell.fwd", "reference")
    assert cell_reference["status"] == "ok" and cell_reference["speedup_vs_reference"] == pytest.approx(1.0)
    assert cell_reference["saved_for_backward_bytes"] is None  # forward only: no backward runs
    assert _record(records, "lstm_cell.fwd", "torch.nn")["status"] == "ok"
    cuda = _record(records, "lstm_cell.fwd", "cuda")
    assert cuda["status"] == "unavailable" and cuda["reason"]
    # The reference keeps the [B, 1, Tk, A] tanh tensor for backward.
    attention = _record(records, "attention_one_query.fwd_bwd", "reference")
    sizes = attention["sizes"]
    assert attention["saved_for_backward_bytes"] >= sizes["B"] * sizes["Tk"] * sizes["A"] * 4


def test_forced_variants_of_a_backend_are_timed_side_by_side():
    """The Triton layer in its three schedules (through the interpreter here, the graph replay's stand-in), each
    checked against the reference."""
    case = OpCase("lstm_layer", "fwd_bwd", {"T": 3, "B": 2, "H": 8}, torch.float32, CPU)
    case.max_rotations = 1
    schedules = {"triton: persistent", "triton: per step", "triton: per step + graph"}
    records = run_suite([case], SuiteOptions(policy=TINY, log=lambda line: None, providers=sorted(schedules)))
    variants = {r["provider"]: r for r in records if r["provider"].startswith("triton: ")}
    assert set(variants) == schedules
    for record in variants.values():
        if backends.unavailable_reason("triton", CPU) is None:
            assert record["status"] == "ok" and record["max_relative_error"] < 1e-4, record
        else:
            assert record["status"] == "unavailable" and "Triton" in record["reason"]


@pytest.mark.cuda_kernels
@pytest.mark.parametrize("family,sizes", [("attention_one_query", {"B": 3, "Tk": 7, "A": 16, "Dv": 8}),
                                          ("attention_many", {"B": 2, "Tq": 3, "Tk": 7, "A": 16, "Dv": 8})])
def test_forced_attention_variants_get_the_reference_results(monkeypatch, family, sizes):
    """The cuda attention's forced tanh variants take [B, Tq, A] queries, as every backend does: the bench hands them
    one query per row as [B, 1, A] and squeezes the results, as functional does (the emulation is let through here;
    the suite itself refuses to time it)."""
    from s2s_fast.bench import ops

    monkeypatch.setattr(ops, "backend_unavailable", lambda *args, **kwargs: None)
    case = OpCase(family, "fwd_bwd", sizes, torch.float32, CPU if cuda_compiled.EMULATED_GPU else torch.device("cuda"))
    inputs = case.make_inputs(0)
    expected = case.prepare("reference", inputs).results()
    for provider in ("cuda: packed tanh", "cuda: scalar tanh"):
        results = case.prepare(provider, inputs).results()
        assert results.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(results[name], value, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("family,mode,sizes", [
    ("decoder_step", "fwd", {"model": "g2p", "Vs": 31, "Vt": 43, "B": 2, "S": 5}),
    ("train_step", "train", {"model": "g2p", "Vs": 31, "Vt": 43, "B": 2, "S": 5, "T": 4}),
])
def test_a_float32_model_case_is_checked_against_float64(family, mode, sizes):
    """Its gold was the float32 reference itself: a provider's error "against the wider result" was measured
    against the very result it missed, and the reference's own error read 0."""
    from s2s_fast.bench.models import ModelCase

    case = ModelCase(family, mode, sizes, torch.float32, CPU)
    inputs = case.make_inputs(0)
    reference, gold = case.prepare("reference", inputs).results(), case.gold(inputs).results()
    assert reference.keys() == gold.keys()
    for name, value in gold.items():
        if value.is_floating_point():
            assert value.dtype == torch.float64, name
            torch.testing.assert_close(reference[name].double(), value, rtol=1e-3, atol=1e-4)


def test_registry_backends_are_checked_then_timed_or_listed_unavailable():
    # Tiny sizes: under tests/conftest.py the triton backend runs on the CPU through the (slow) interpreter.
    case = OpCase("lstm_cell", "fwd_bwd", {"B": 2, "H": 16}, torch.float32, CPU)
    case.max_rotations = 1
    records = run_suite([case], SuiteOptions(policy=TINY, log=lambda line: None))
    assert [r["provider"] for r in records] == ["reference", "torch.compile", "torch.nn", "aten", "cpu", "triton",
                                                "cuda", "cuda: fused gates", "cuda: cuBLAS gates"]
    for record in records:
        backend = record["provider"].split(": ")[0]
        if backend == "cuda" and cuda_compiled.EMULATED_GPU is not None:
            assert record["status"] == "unavailable" and "emulation" in record["reason"]
        elif backend in ("aten", "cpu", "triton", "cuda"):
            reason = backends.unavailable_reason(backend, CPU)
            assert record["status"] == ("ok" if reason is None else "unavailable"), record
            assert record["reason"] == reason
        if record["status"] == "ok" and record["provider"] != "reference":
            assert record["max_relative_error"] < 1e-4 and record["saved_for_backward_bytes"] is not None


def test_cpu_providers_are_timed_in_turn_and_one_that_raises_leaves_the_others_timed():
    order = []

    def provider(name, fails_at=None):
        def call(index):
            order.append(name)
            if order.count(name) == fails_at:
                raise RuntimeError(f"{name} lost its way")
        return call
    policy = TimingPolicy(warmup_s=0.0, budget_s=0.0, min_reps=4, max_reps=4)
    timings = timing.measure_interleaved({"reference": provider("reference"), "auto": provider("auto"),
                                          "cpu": provider("cpu", fails_at=4)}, CPU, 2, policy)
    # Two warm-up calls each (one per input set), then the timed calls in turn; cpu's second timed call raised.
    assert order == ["reference"] * 2 + ["auto"] * 2 + ["cpu"] * 2 + ["reference", "auto", "cpu"] * 2 + \
        ["reference", "auto"] * 2
    assert [timings[name].repetitions for name in ("reference", "auto")] == [4, 4]
    assert isinstance(timings["cpu"], RuntimeError)


def test_side_by_side_blocks_alternate_their_order_and_ratios_pair_rounds(monkeypatch):
    """alternate_blocks, the A/B scripts' timing loop: one untimed call of each setting, then each round runs every
    setting's block in turn, A B then B A; the times are per call, and ratios pair the settings' times round by
    round."""
    order, clock = [], [0.0]
    cost = {"a": 1.0, "b": 3.0}  # seconds a call takes on the fake clock

    def call(name):
        def run():
            order.append(name)
            clock[0] += cost[name]
        return run
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    measured = timing.alternate_blocks({"a": call("a"), "b": call("b")}, block=2, rounds=3)
    assert order == ["a", "b"] + ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]  # a warm-up call each
    assert measured.times_ms == {"a": [1e3] * 3, "b": [3e3] * 3}
    assert measured.ratios("b", "a") == [3.0] * 3 and measured.median_ms("b") == 3e3
    assert measured.ratio_line("a", "b") == "a/b 0.333 (0.333-0.333)"
    assert timing.block_size(call("a"), 10.0, CPU) == 10 and timing.block_size(call("b"), 1.0, CPU, least=2) == 2
    with pytest.raises(ValueError, match="block >= 1"):
        timing.alternate_blocks({"a": call("a")}, block=0, rounds=1)


def test_a_cpu_case_times_every_checked_provider_in_one_interleaved_measurement(monkeypatch):
    measured = []

    def recording(calls, *args):
        measured.append(sorted(calls))
        return real(calls, *args)
    real = timing.measure_interleaved
    monkeypatch.setattr(suite, "measure_interleaved", recording)
    case = OpCase("lstm_cell", "fwd", {"B": 2, "H": 16}, torch.float32, CPU)
    records = run_suite([case], SuiteOptions(policy=TINY, providers=["aten", "cpu"], log=lambda line: None))
    ok = sorted(r["provider"] for r in records if r["status"] == "ok")
    assert len(ok) >= 2 and measured == [ok]


class _FakeBackend(types.ModuleType):
    """A registry backend whose lstm_cell is wrong (and counts its calls) and whose gru_cell refuses float32."""

    def __init__(self):
        super().__init__("s2s_fast.triton")
        self.calls = 0

        def wrong_lstm_cell(*args):
            self.calls += 1
            hy, cy = reference.OPS["lstm_cell"](*args)
            return hy + 0.01, cy

        self.OPS = {"lstm_cell": wrong_lstm_cell, "gru_cell": reference.OPS["gru_cell"]}
        self.LIMITS = {"gru_cell": lambda *args: "float32 is not supported by this fake"}

    @staticmethod
    def unavailable_reason(device):
        return None


@pytest.fixture
def fake_triton(monkeypatch):
    """The fake stands in for the triton backend in the registry (and for its module, which the suite inspects)."""
    fake = _FakeBackend()
    monkeypatch.setitem(backends._loaded, "triton", (fake, None))
    monkeypatch.setitem(sys.modules, "s2s_fast.triton", fake)
    return fake


def test_a_wrong_provider_is_reported_failed_and_not_timed(fake_triton):
    records = _run(r"lstm_cell\.fwd|gru_cell\.fwd", providers=["triton"])
    wrong = _record(records, "lstm_cell.fwd", "triton")
    assert wrong["status"] == "failed" and "hy disagrees" in wrong["reason"]
    assert wrong["median_ms"] is None and wrong["speedup_vs_reference"] is None
    assert fake_triton.calls == 1  # the check only: never timed
    refused = _record(records, "gru_cell.fwd", "triton")
    assert refused["status"] == "unavailable" and "float32 is not supported by this fake" in refused["reason"]
    assert _record(records, "lstm_cell.fwd", "reference")["status"] == "ok"


def test_model_cases_run_and_cuda_graph_providers_are_unavailable_on_cpu():
    records = _run(r"decoder_step|train_step\.train\[model=g2p", providers=["reference+cudagraph", "aten"])
    step = _record(records, "decoder_step", "reference")
    assert step["status"] == "ok" and step["tokens_per_call"] == step["sizes"]["B"]
    graphed = _record(records, "decoder_step", "reference" + GRAPH_SUFFIX)
    assert graphed["status"] == "unavailable" and "CUDA" in graphed["reason"]
    train = _record(records, "train_step", "reference")
    assert train["status"] == "ok" and train["saved_for_backward_bytes"] > 0
    assert train["work"]["matmul_flops"] > 0 and train["work"]["special_functions"] > 0
    aten = _record(records, "train_step", "aten")  # a backend named alone must serve every op: aten has no attention
    assert aten["status"] == "unavailable" and "'aten' does not implement additive_attention" in aten["reason"], aten


def test_cli_writes_every_output(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--filter", "gru_cell",
                 "--providers", "torch.nn,cuda"]) == 0
    printed = capsys.readouterr().out
    assert "gru_cell.fwd[B=8,H=256]" in printed and "Targets" in printed and "floor inputs" in printed
    records = json.loads((out / "results.json").read_text())
    assert {r["provider"] for r in records} == {"reference", "torch.nn", "cuda"}
    for record in records:
        for key, kinds in REQUIRED.items():
            assert isinstance(record[key], kinds), (key, record[key])
        assert record["device_type"] == "cpu" and record["mode"] == "quick"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["floor_inputs"]["copy_bytes_per_s"] > 0 and len(summary["targets"]) == len(TARGETS)
    assert "| benchmark | provider |" in (out / "results.md").read_text()
    for plot in ("speedup.png", "memory.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_into_the_same_directory_keeps_the_first_runs_outputs(tmp_path, capsys, monkeypatch):
    """The earlier run's five outputs move, whole, to earlier/<its date>/; a run cut short leaves its finished cases
    in results.partial.json beside them and touches nothing else."""
    out = tmp_path / "results"
    argv = ["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--providers", "torch.nn"]
    assert main([*argv, "--filter", "gru_cell"]) == 0
    first = {name: (out / name).read_bytes() for name in ("results.json", "summary.json", "results.md")}
    date = json.loads(first["summary.json"])["metadata"]["date"]
    assert main([*argv, "--filter", "lstm_cell"]) == 0
    assert "gru_cell" not in (out / "results.json").read_text()
    kept = out / "earlier" / date.replace(":", "-")
    assert sorted(p.name for p in kept.iterdir()) == sorted(["memory.png", "speedup.png", *first])
    assert all((kept / name).read_bytes() == content for name, content in first.items())
    assert not (out / "results.partial.json").exists()

    import s2s_fast.bench as bench

    second = {name: (out / name).read_bytes() for name in ("results.json", "summary.json", "results.md")}
    run_suite = bench.run_suite

    def interrupted_after_the_cases(cases, options):  # Ctrl-C as the rates are measured again
        run_suite(cases, options)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_suite", interrupted_after_the_cases)
    with pytest.raises(KeyboardInterrupt):
        bench.run_benchmarks(quick=True, device="cpu", output_dir=out, pattern="gru_cell", providers=["torch.nn"])
    assert {name: (out / name).read_bytes() for name in second} == second
    assert len(list((out / "earlier").iterdir())) == 1
    partial = json.loads((out / "results.partial.json").read_text())
    assert partial and all(r["benchmark"].startswith("gru_cell") for r in partial)


def test_a_bad_output_directory_or_time_limit_is_refused_before_anything_runs(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for extra, message in ((["--output-dir", str(blocker)], "--output-dir .*a-file: File exists"),
                           (["--output-dir", str(blocker / "sub")], "Not a directory"),
                           (["--time-limit", "-1"], "the time limit must be a positive number of seconds"),
                           (["--time-limit", "nan"], "the time limit must be a positive number of seconds")):
        assert main(["bench", "--quick", "--device", "cpu", "--filter", "gru_cell", *extra]) == 1
        err = capsys.readouterr().err
        assert re.search(message, err) and len(err.strip().splitlines()) == 1 and "measuring" not in err, err


def test_cli_rejects_unknown_providers_and_empty_selections(capsys):
    """A user error in a bench run exits 1 with one line on stderr, as in every other command."""
    assert main(["bench", "--quick", "--device", "cpu", "--filter", "gru_cell", "--providers", "trition"]) == 1
    err = capsys.readouterr().err
    assert "unknown provider(s) trition" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "--quick", "--device", "cpu", "--filter", "no-such-benchmark"]) == 1
    assert "no benchmark name matches" in capsys.readouterr().err


def test_a_cpu_run_names_the_instruction_set_its_kernels_use():
    device = metadata(torch.device("cpu"), torch.float32, quick=True)["device"]
    assert device.endswith(f" cores, {torch.backends.cpu.get_cpu_capability()})"), device


def test_the_results_of_a_run_cut_short_survive_the_next_run(tmp_path, capsys):
    """The next run into the directory overwrote them after its first case and deleted them at its end."""
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.partial.json").write_text('[{"benchmark": "cut short"}]\n')
    assert main(["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--filter", "gru_cell",
                 "--providers", "torch.nn"]) == 0
    kept = [path for path in (out / "earlier").iterdir() if path.name.endswith("-cut-short")]
    assert len(kept) == 1 and (kept[0] / "results.partial.json").read_text() == '[{"benchmark": "cut short"}]\n'
    assert not (out / "results.partial.json").exists() and (out / "results.json").exists()


def test_cut_short_while_writing_the_earlier_outputs_stay_whole(tmp_path, capsys, monkeypatch):
    """Ctrl-C as the plots were drawn left the new JSON and Markdown beside no plots, the earlier run's moved away."""
    import s2s_fast.bench.report as report

    out = tmp_path / "results"
    argv = ["bench", "--quick", "--device", "cpu", "--output-dir", str(out), "--providers", "torch.nn"]
    assert main([*argv, "--filter", "gru_cell"]) == 0
    first = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot", interrupted)
    assert main([*argv, "--filter", "lstm_cell"]) == 130
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == \
        {**first, "results.partial.json": (out / "results.partial.json").read_bytes()}
    assert not (out / "earlier").exists() and not list(out.glob(".writing-*"))


@pytest.mark.parametrize("setting, message", [("earlier", r"earlier is not a folder"),
                                              ("providers", r"--providers 'torch.nn,' names an empty provider"),
                                              ("output", "--output-dir is empty")])
def test_an_output_directory_or_provider_list_that_cannot_serve_is_refused_before_measuring(tmp_path, capsys,
                                                                                         setting, message):
    out = tmp_path / "results"
    out.mkdir()
    (out / "earlier").write_text("")  # a file where the earlier runs' outputs go
    argv = {"earlier": ["--output-dir", str(out)],
            "providers": ["--output-dir", str(tmp_path / "b"), "--providers", "torch.nn,"],
            "output": ["--output-dir", ""]}[setting]
    assert main(["bench", "--quick", "--device", "cpu", "--filter", "gru_cell", *argv]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1 and "measuring" not in err, err


def test_targets_name_torch_nn_by_device_and_say_when_providers_were_left_out():
    target = next(t for t in TARGETS if t.min_speedup_vs_torch_nn is not None)
    row = dict(benchmark=target.case_name, status="ok", reason=None, dtype="float32", peak_memory_bytes=1,
               saved_for_backward_bytes=None, speedup_vs_reference=1.0)
    records = [dict(row, provider=name, median_ms=ms) for name, ms in (("reference", 2.0), ("torch.nn", 2.0),
                                                                       ("cpu", 1.0), ("aten", 1.9))]
    for device_type, label in (("cpu", "speedup vs torch.nn"), ("cuda", "speedup vs torch.nn (cuDNN)")):
        evaluation = next(e for e in evaluate_targets(records, {"device": "x", "device_type": device_type})
                          if e["benchmark"] == target.case_name)
        cpu = next(p for p in evaluation["providers"] if p["provider"] == "cpu")
        assert any(check["name"] == label and check["value"] == 2.0 for check in cpu["checks"]), cpu
        # torch's own kernels are not graded against torch (cuDNN "at least as fast as cuDNN").
        assert [p["provider"] for p in evaluation["providers"]] == ["cpu"]
    evaluation = next(e for e in evaluate_targets(records[:2], {"device": "x", "device_type": "cpu"})
                      if e["benchmark"] == target.case_name)
    assert evaluation["summary"] == "no fused provider was run (--providers left them out)"


def test_the_rates_measured_twice_keep_the_method_of_the_better_one_and_the_table_the_dirty_mark():
    from s2s_fast.bench.floors import best_rates
    from s2s_fast.bench.report import _short_commit

    def rates(matmul, method):
        return MachineRates(1.0, 1.0, matmul, "float32", {"copy": "c", "special_functions": "s", "matmul": method,
                                                          "seconds": 1.0})
    best = best_rates(rates(80e9, "mm in float32"), rates(90e9, "oneDNN in float32"))
    assert best.matmul_flops_per_s == 90e9 and best.methods["matmul"] == "oneDNN in float32"
    assert _short_commit({"git_commit": "961beb2a8f0d" + "0" * 28 + "+dirty"}) == "961beb2a8f0d+dirty"


def test_the_micro_benchmarks_check_and_run_their_cases(tmp_path):
    """benchmarks/test_micro.py lies outside the suite's testpaths: it had fallen behind compare's return value and
    failed every case it ran. One op's cases, each run once (--benchmark-disable)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pytest", str(root / "benchmarks"), "--benchmark-disable", "-q",
                             "-p", "no:cacheprovider", "-k", "lstm_cell and (reference or torch.nn or cpu)"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-2000:]


def test_a_second_bench_in_a_directory_in_use_is_refused_naming_the_first(tmp_path, capsys):
    """Two runs there raced: the second moved the first's partial results away, and both published at once."""
    from s2s_fast.files import locked_directory

    out = tmp_path / "results"
    with locked_directory(out, "s2s-fast bench"):
        assert main(["bench", "--quick", "--device", "cpu", "--filter", "gru_cell", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"in use by another s2s-fast bench \(pid \d+\)", err) and len(err.strip().splitlines()) == 1
    assert "measuring" not in err
