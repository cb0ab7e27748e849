# Session 16, one call (~420 s): from the s16 branch's checkout after node scripts/build.mjs and
# bench/build-base.sh 74db470 dist-base; carry [".device", "dist", "dist-base"].
# 1. the bf16 GPU suite (the LayerNorm instances at every width, fixedWeights' test, the model,
#    training, graph and generate tests with the new LayerNorm);
# 2. ncu: the LayerNorms of a batch-1 sampling run and of a 16 x 2048 step, dist-base against dist;
# 3. wall: batch-1 and batch-16 sampling, dist (fixed weights), dist with the weights converted
#    every run (MOE_DIFFUSEQ_FIXED_WEIGHTS=0: the LayerNorm alone) and dist-base, 4 rounds;
#    training, dist against dist-base, 2 rounds.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 330 node --test --test-concurrency=1 dist/test/cuda/bf16.test.js > "$OUT/s16-tests.log" 2>&1
echo "tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/s16-tests.log" | head
grep -A30 "^not ok" "$OUT/s16-tests.log" | grep -v "^\s*at " | head -30
nln() {  # build, items, label
  timeout 90 ncu --clock-control none --kernel-name regex:layernorm --metrics gpu__time_duration.sum --csv --page raw \
    node $1/bench/gpu.js --items $2 --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nln.csv 2> "$OUT/nln.err"
  echo "== $3 rc=$?"; node dist/bench/ncu-sum.js /tmp/nln.csv --runs 2 --top 4 | head -5
}
nln dist-base kernels-sample "batch 1, before"
nln dist kernels-sample "batch 1, loads first"
nln dist-base kernels "16 x 2048 step, before"
nln dist kernels "16 x 2048 step, loads first"
for round in 1 2 3 4; do
  for v in dist dist-cast dist-base; do
    b=$v; env=""
    [ $v = dist-cast ] && { b=dist; env=MOE_DIFFUSEQ_FIXED_WEIGHTS=0; }
    echo "== $v (round $round)" >> "$OUT/s16-sample-ab.log"
    env $env timeout 60 node $b/bench/gpu.js --items sample --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/s16-sample-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/s16-sample-ab.log" | tee "$OUT/s16-sample-ab.md"
for round in 1 2; do
  for b in dist dist-base; do
    echo "== $b (round $round)" >> "$OUT/s16-train-ab.log"
    timeout 90 node $b/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/s16-train-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/s16-train-ab.log" | tee "$OUT/s16-train-ab.md"
