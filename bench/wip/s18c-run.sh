# Session 18, v32 as merged: the LayerNorm backward's weight gradients in its dx pass through a
# shared-memory tile (layernorm_backward_sums_bf16_vec*), the experts' bias gradients 16 bytes a
# thread (col_sums_segments_bf16x8), column-sum chunks as before; v32a/b's GELU fusion and chunking
# left out. Tests that cover it, ncu sums of a 16 x 2048 step, wall time alternated with main
# (dist-base, bench/build-base.sh main). carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 200 node --test --test-concurrency=1 --test-name-pattern="bfloat16 column sums|bfloat16 activations|bf16 model: the base config|LayerNorm on rows" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
rc=$?
timeout 120 node --test --test-concurrency=1 --test-name-pattern="programmatic dependent launch|cast once, or layer by layer|base config: loss and gradients" dist/test/cuda/model.test.js > "$OUT/tests-model.log" 2>&1
rc2=$?
echo "tests rc=$rc/$rc2 ($((SECONDS-t0)) s)"; grep -hE "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" "$OUT/tests-model.log" | head
grep -hA30 "^not ok" "$OUT/tests.log" "$OUT/tests-model.log" | grep -v "^\s*at " | head -40
[ $rc = 0 ] && [ $rc2 = 0 ] || exit 1
timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
  node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 60 > "$OUT/ncu-v32.txt"
echo "== v32 ($((SECONDS-t0)) s)"; head -1 "$OUT/ncu-v32.txt"
grep -E "layernorm_backward|col_sums|gelu_backward" "$OUT/ncu-v32.txt"
for round in 1 2 3; do
  for b in dist dist-base; do
    echo "== $b (round $round)" >> "$OUT/train-ab.log"
    timeout 100 node $b/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/train-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/train-ab.log"
echo "done ($((SECONDS-t0)) s)"
