# Session 16, fourth call (~150 s): score_argmax_tma (MOE_DIFFUSEQ_SCORE_TMA=1) against the cp.async
# scoring: the scoring test (the same rows to the index from both), sampling with it, ncu of a
# batch-1 run's scorings, batch-1 sampling alternated, 4 rounds. carry [".device", "dist"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="nearestRows and argmaxDot" dist/test/cuda/ops.test.js > "$OUT/s16d-tests.log" 2>&1
echo "tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/s16d-tests.log" | head
grep -A30 "^not ok" "$OUT/s16d-tests.log" | grep -v "^\s*at " | head -30
MOE_DIFFUSEQ_SCORE_TMA=1 timeout 120 node --test --test-concurrency=1 --test-name-pattern="sampling with CUDA graphs|generate on a GPU" dist/test/cuda/bf16.test.js > "$OUT/s16d-tests-sampling.log" 2>&1
echo "sampling tests with it rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/s16d-tests-sampling.log" | head
nsc() {
  local label=$1
  shift
  env "$@" timeout 90 ncu --clock-control none --kernel-name regex:score_argmax --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/nsc.csv 2> "$OUT/nsc.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nsc.csv --runs 2 --top 3 | tail -3
}
nsc "cp.async" MOE_DIFFUSEQ_SCORE_TMA=0
nsc "TMA" MOE_DIFFUSEQ_SCORE_TMA=1
for round in 1 2 3 4; do
  for v in 0 1; do
    echo "== scoreTma=$v (round $round)" >> "$OUT/s16d-ab.log"
    MOE_DIFFUSEQ_SCORE_TMA=$v timeout 60 node dist/bench/gpu.js --items sample --batches 1 --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/s16d-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/s16d-ab.log" | tee "$OUT/s16d-ab.md"
