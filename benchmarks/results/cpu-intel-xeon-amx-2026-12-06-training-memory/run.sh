# $1 name, rest: env assignments
name=$1; shift
cd /tmp/mem && rm -rf /tmp/mem/$name
env "$@" PYTHONPATH=/work/main python -m s2s_fast train --task g2p --preset g2p --output-dir /tmp/mem/$name --threads 1 \
  --matmul-precision medium --max-steps ${STEPS:-1500} --eval-every 500 --keep-checkpoints 2 --progress off > /tmp/mem/$name.log 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
  echo "$(date +%s) $(grep VmRSS /proc/$pid/status | awk '{print $2}') $(grep -o 'step [0-9]*' /tmp/mem/$name/train.log 2>/dev/null | tail -1)" >> /tmp/mem/$name.rss
  sleep 15
done
