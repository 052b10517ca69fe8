#!/bin/bash
# The protocol's scoring, in its order: dev of the four at CTC weights 0, 0.1, 0.3, 0.5; then test (item 1, and 1b's
# chosen weight when it is not 0: chosen by choose.py from the dev reports); then each run alone on test.
cd /work/runs10/aim
runs="g2p-cl6 g2p-cl7 g2p-cr6 g2p-cr7"
for w in 0 0.1 0.3 0.5; do
  echo "dev ctc $w $(date -u +%T)"
  python -m s2s_fast evaluate $runs --split dev --ctc-weight $w --device cpu
done
w=$(python choose.py)
echo "chosen weight $w $(date -u +%T)"
echo "test plain $(date -u +%T)"
python -m s2s_fast evaluate $runs --split test --device cpu
if [ "$w" != "0" ]; then
  echo "test ctc $w $(date -u +%T)"
  python -m s2s_fast evaluate $runs --split test --ctc-weight $w --device cpu
fi
for r in $runs; do
  echo "test $r $(date -u +%T)"
  python -m s2s_fast evaluate $r --split test --device cpu
done
echo "end $(date -u +%T)"
