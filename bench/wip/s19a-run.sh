# Session 19, s19a: the attention backward's tiles of global rows in split runs (am_bwd_block,
# attn_bwd_combine). The tensor-core attention tests and the base model's, ncu sums of a step at
# 16 x 2048 and 4 x 8192 with the split on and off (MOE_DIFFUSEQ_ATTN_BWD_SPLIT), wall time alternated.
# carry [".device", "dist"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 200 node --test --test-concurrency=1 --test-name-pattern="tensor-core attention kernels|bfloat16 activations: matmul|bf16 model: the base config" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -A30 "^not ok" "$OUT/tests.log" | grep -v "^\s*at " | head -40
[ $rc = 0 ] || exit 1
for shape in 16x2048 4x8192; do
  for v in 1 0; do
    MOE_DIFFUSEQ_ATTN_BWD_SPLIT=$v timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
      node dist/bench/gpu.js --items kernels --shape $shape --configs base --peer none --out /tmp/k.json > /tmp/nk$v.csv 2> "$OUT/nk$v-$shape.err"
    node dist/bench/ncu-sum.js /tmp/nk$v.csv --runs 2 --top 60 > "$OUT/ncu-$shape-split$v.txt"
    echo "== $shape split=$v ($((SECONDS-t0)) s)"; head -1 "$OUT/ncu-$shape-split$v.txt"
    grep -E "attn_" "$OUT/ncu-$shape-split$v.txt"
  done
done
for round in 1 2 3; do
  for v in 1 0; do
    echo "== split$v (round $round)" >> "$OUT/train-ab.log"
    MOE_DIFFUSEQ_ATTN_BWD_SPLIT=$v timeout 100 node dist/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/train-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/train-ab.log" | tee "$OUT/train-ab.md"
echo "done ($((SECONDS-t0)) s)"
