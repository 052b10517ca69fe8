# Time `s2s-fast evaluate RUN --split dev` at medium with the inference rule on and off (alternating, in-process).
import sys, time, io, contextlib, torch
import s2s_fast.backends as b
from s2s_fast.cli import main
run, beam, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
rule = dict(b.CPU_BF16_INFERENCE_PREFERS_CPU)
for r in range(rounds):
    for name, table in (("rule on", rule), ("rule off", {})):
        b.CPU_BF16_INFERENCE_PREFERS_CPU.clear(); b.CPU_BF16_INFERENCE_PREFERS_CPU.update(table)
        out = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            main(["evaluate", run, "--split", "dev", "--beam-size", beam, "--matmul-precision", "medium",
                  "--device", "cpu"])
        line = [l for l in out.getvalue().splitlines() if "WER" in l or "wer" in l][:1]
        print(f"round {r} {name} beam {beam}: {time.perf_counter() - t:.1f} s {line}", flush=True)
