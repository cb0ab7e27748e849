# Session 18, v32b: v32a's fusions with the LayerNorm one through a shared-memory tile (v32a kept the
# sums in the row's lanes: 225 registers, one block an SM) and column-sum chunks sized for 16-byte
# column blocks (v32a's GELU fusion ran in two waves and a tail). The bf16 tests that cover them, ncu
# sums of a 16 x 2048 step with the fusions on and off (MOE_DIFFUSEQ_FUSED_SUMS=0), wall time alternated.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 240 node --test --test-concurrency=1 --test-name-pattern="column sums fused|bfloat16 activations: MoE|bf16 model: the base config|LayerNorm on rows" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -A30 "^not ok" "$OUT/tests.log" | grep -v "^\s*at " | head -40
[ $rc = 0 ] || exit 1
# dist-base = main before v32 (bench/build-base.sh main): carry it too
MOE_DIFFUSEQ_FUSED_SUMS=1 timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
  node dist-base/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nkb.csv 2> "$OUT/nkb.err"
node dist/bench/ncu-sum.js /tmp/nkb.csv --runs 2 --top 60 > "$OUT/ncu-base.txt"
echo "== main ($((SECONDS-t0)) s)"; head -1 "$OUT/ncu-base.txt"
grep -E "layernorm_backward|col_sums|gelu_backward" "$OUT/ncu-base.txt"
for v in 1 0; do
  MOE_DIFFUSEQ_FUSED_SUMS=$v timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk$v.csv 2> "$OUT/nk$v.err"
  node dist/bench/ncu-sum.js /tmp/nk$v.csv --runs 2 --top 60 > "$OUT/ncu-fused$v.txt"
  echo "== fused=$v ($((SECONDS-t0)) s)"; head -1 "$OUT/ncu-fused$v.txt"
  grep -E "layernorm_backward|col_sums|gelu_backward" "$OUT/ncu-fused$v.txt"
done
for round in 1 2 3; do
  for v in 1 0 base; do
    echo "== fused$v (round $round)" >> "$OUT/train-ab.log"
    b=dist; [ $v = base ] && b=dist-base
    MOE_DIFFUSEQ_FUSED_SUMS=$v timeout 100 node $b/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/train-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/train-ab.log" | tee "$OUT/train-ab.md"
echo "done ($((SECONDS-t0)) s)"
