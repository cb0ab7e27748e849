# Session 19, s19c: the training step without read-backs between steps (queueDiffusionLoss,
# readLater, addNormGradient; bench train queues step i + 1 while step i runs, as the peer's loop).
# GPU tests of the new ops and of the model's loss and gradients, then train with the steps queued
# back to back against --sync-steps (the old measure), alternated. carry [".device", "dist"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 150 node --test --test-concurrency=1 --test-name-pattern="readLater|axpby, mul|memory: float64" dist/test/cuda/ops.test.js > /tmp/t1.log 2>&1
r1=$?
timeout 200 node --test --test-concurrency=1 --test-name-pattern="base config: loss and gradients|tiny preset: 300" dist/test/cuda/model.test.js > /tmp/t2.log 2>&1
r2=$?
echo "tests rc=$r1/$r2 ($((SECONDS-t0)) s)"; grep -hE "^# (tests|pass|fail)|^not ok" /tmp/t1.log /tmp/t2.log | head
grep -h -A30 "^not ok" /tmp/t1.log /tmp/t2.log | grep -v "^\s*at " | head -40
[ $r1 = 0 ] && [ $r2 = 0 ] || exit 1
for round in 1 2 3; do
  for v in queued synced; do
    echo "== $v (round $round)" >> /tmp/train-ab.log
    f=""; [ $v = synced ] && f="--sync-steps"
    timeout 100 node dist/bench/gpu.js --items train --configs base --peer none $f --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/train-ab.log
  done
done
node dist/bench/ab-sum.js /tmp/train-ab.log | tee "$OUT/train-ab.md"
cp /tmp/train-ab.log "$OUT/"
echo "done ($((SECONDS-t0)) s)"
