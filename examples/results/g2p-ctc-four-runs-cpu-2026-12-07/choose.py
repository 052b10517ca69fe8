"""1b of the protocol: the CTC weight (0, 0.1, 0.3, 0.5) whose four-run dev evaluation has the lowest WER, then PER,
then the smaller weight."""
import glob, json
reports = [json.load(open(f)) for f in glob.glob("g2p-cl6/evaluations/dev-ensemble-*-beam5*.json")]
scored = sorted((r["metrics"]["wer"], r["metrics"]["per"], r.get("ctc_weight", 0.0)) for r in reports)
assert sorted(s[2] for s in scored) == [0.0, 0.1, 0.3, 0.5], scored
for s in scored:
    print(s, file=__import__("sys").stderr)
best = scored[0][2]
print("0" if best == 0 else f"{best:g}")
