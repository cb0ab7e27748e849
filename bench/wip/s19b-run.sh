# Session 19, s19b: the attention backward's runs of global tiles by length (MOE_DIFFUSEQ_ATTN_BWD_SPLIT
# = tiles a run; one run stores bf16 directly, more go through attn_bwd_combine). The tensor-core
# attention tests (runs of 8, plain order), ncu of the backward kernels alone by run length at
# 16 x 2048 and 4 x 8192, wall time of 32 (the default) against 8 alternated. carry [".device", "dist"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 200 node --test --test-concurrency=1 --test-name-pattern="tensor-core attention kernels|bf16 model: the base config" dist/test/cuda/bf16.test.js > /tmp/tests.log 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" /tmp/tests.log | head
grep -A30 "^not ok" /tmp/tests.log | grep -v "^\s*at " | head -40
[ $rc = 0 ] || exit 1
for shape in 16x2048 4x8192; do
  for v in 8 16 32 64; do
    MOE_DIFFUSEQ_ATTN_BWD_SPLIT=$v timeout 100 ncu --clock-control none --kernel-name regex:attn_bwd --metrics gpu__time_duration.sum --csv --page raw \
      node dist/bench/gpu.js --items kernels --shape $shape --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> /tmp/nk.err
    echo "== $shape runs of $v ($((SECONDS-t0)) s)"
    node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 10
  done
done > "$OUT/ncu-runs.txt"
cat "$OUT/ncu-runs.txt"
for round in 1 2; do
  for v in 32 8; do
    echo "== runs$v (round $round)" >> /tmp/train-ab.log
    MOE_DIFFUSEQ_ATTN_BWD_SPLIT=$v timeout 100 node dist/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/train-ab.log
  done
done
node dist/bench/ab-sum.js /tmp/train-ab.log | tee "$OUT/train-ab.md"
echo "done ($((SECONDS-t0)) s)"
