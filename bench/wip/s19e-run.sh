# Session 19, s19e (v33): the LayerNorm forward two rows a warp from 8,192 rows (layernorm_bf16_vec*x2).
# Its bit test and the other LayerNorm tests, ncu of the LayerNorm kernels in a 16 x 2048 step and a
# batch-16 sampling run, this build against dist-base (HEAD before it), sampling and training wall
# time alternated. carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 150 node --test --test-concurrency=1 --test-name-pattern="LayerNorm" dist/test/cuda/bf16.test.js > /tmp/t.log 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" /tmp/t.log | head
grep -A30 "^not ok" /tmp/t.log | grep -v "^\s*at " | head -30
[ $rc = 0 ] || exit 1
for b in dist dist-base; do
  timeout 100 ncu --clock-control none --kernel-name regex:layernorm_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> /tmp/nk.err
  echo "== $b train 16x2048"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 6
  timeout 100 ncu --clock-control none --kernel-name regex:layernorm_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels-sample --batches 16 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> /tmp/nk.err
  echo "== $b sample B=16"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 1 --top 6
done 2>&1 | tee "$OUT/ncu-ln.txt"
echo "ncu done ($((SECONDS-t0)) s)"
for round in 1 2; do
  for b in dist dist-base; do
    echo "== $b (round $round)" >> /tmp/ab.log
    timeout 100 node $b/bench/gpu.js --items sample --batches 16 --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/ab.log
    timeout 100 node $b/bench/gpu.js --items train --shape 16x2048 --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/ab.log
  done
done
node dist/bench/ab-sum.js /tmp/ab.log | tee "$OUT/ab.md"
echo "done ($((SECONDS-t0)) s)"
