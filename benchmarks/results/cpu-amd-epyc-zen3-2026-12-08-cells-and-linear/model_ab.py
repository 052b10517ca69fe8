# In-process side by side: the bench's Seq2Seq cases (decoder step, training steps, greedy and beam decoding; auto,
# float32) with auto's routing of the cells and linear to the cpu backend by CPU_ONEDNN_FROM_WORK ("avx512 table",
# as before 2026-12-08 on every CPU) and by CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512 ("avx2 table", what this CPU now
# gets), switched between blocks through backends.cpu_has_avx512. Timing: s2s_fast.bench.timing.alternate_blocks.
# Also counts, for one call, which backend auto picks for each op under each table. Usage: model_ab.py THREADS
import collections
import sys

import torch

threads = int(sys.argv[1])
torch.set_num_threads(threads)
import s2s_fast  # noqa: E402
from s2s_fast import backends  # noqa: E402
from s2s_fast.bench.cases import build_cases  # noqa: E402
from s2s_fast.bench.timing import alternate_blocks, block_size  # noqa: E402

CPU = torch.device("cpu")
print("library", s2s_fast.__file__, "threads", threads, "cpu_has_avx512", backends.cpu_has_avx512(), flush=True)
TABLES = {"avx512 table": True, "avx2 table": False}
FAMILIES = ("decoder_step", "train_step", "greedy_decode", "beam_decode")


def with_table(avx512, run):
    def call():
        backends.cpu_has_avx512 = lambda: avx512
        run()
    return call


def picks(avx512, run):
    counted = collections.Counter()
    resolve = backends.resolve

    def counting(op, *rest, **kwargs):
        chosen = resolve(op, *rest, **kwargs)
        counted[f"{op}:{chosen[0]}"] += 1
        return chosen
    backends.resolve = counting
    try:
        with_table(avx512, run)()
    finally:
        backends.resolve = resolve
    return dict(counted)


for case in build_cases(CPU, torch.float32, quick=False):
    if case.family not in FAMILIES:
        continue
    runner = case.prepare("auto", case.make_inputs(0))
    for name, avx512 in TABLES.items():
        print(f"  {name}: one call's picks {picks(avx512, runner.run)}", flush=True)
    calls = {name: with_table(avx512, runner.run) for name, avx512 in TABLES.items()}
    block = block_size(calls["avx512 table"], 0.3, CPU, least=1)
    measured = alternate_blocks(calls, block, rounds=8)
    print(f"{case.name}: avx512 table {measured.median_ms('avx512 table'):.2f} ms, avx2 table "
          f"{measured.median_ms('avx2 table'):.2f} ms; {measured.ratio_line('avx2 table', 'avx512 table')} "
          f"(time over time)", flush=True)
