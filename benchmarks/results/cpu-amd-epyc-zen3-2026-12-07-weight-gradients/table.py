# The README rows from bench-threads-1/ and bench-threads-2/results.json: each case's median ms per provider, and
# the cpu backend's and aten's speed relative to torch.nn (the model cases: auto's relative to the reference).
import json
import pathlib

here = pathlib.Path(__file__).parent
print("| benchmark | threads | reference ms | torch.nn ms | aten ms | cpu / auto ms | cpu or auto vs reference "
      "| cpu vs torch.nn | aten vs torch.nn |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for threads in (1, 2):
    records = json.loads((here / f"bench-threads-{threads}" / "results.json").read_text())
    by_case: dict = {}
    for record in records:
        if record["status"] == "ok":
            by_case.setdefault(record["benchmark"], {})[record["provider"]] = record["median_ms"]
    for case, times in by_case.items():
        ours = times.get("cpu", times.get("auto"))
        nn = times.get("torch.nn")
        cells = [f"{times[p]:.4g}" if p in times else "-" for p in ("reference", "torch.nn", "aten")]
        vs_nn = f"{nn / ours:.2f}x" if nn and ours else "-"
        aten_nn = f"{nn / times['aten']:.2f}x" if nn and "aten" in times else "-"
        print(f"| `{case}` | {threads} | " + " | ".join(cells) + f" | {ours:.4g} | {times['reference'] / ours:.2f}x | "
              f"{vs_nn} | {aten_nn} |")
