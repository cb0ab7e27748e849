# Session 19, s19f (v34): the attention forward's and dQ's products on a tile of at most 16 valid rows
# of the other side (the global rows' tile at G <= 16, a sequence's last rows) as m64n16 scores and
# one k16 step of accumulation. The tensor-core attention tests and the bf16 base model's, ncu of the
# attention kernels in a 16 x 2048 step against dist-base (HEAD before it), training and sampling
# alternated. carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 150 node --test --test-concurrency=1 --test-name-pattern="tensor-core attention kernels|bf16 model: the base config" dist/test/cuda/bf16.test.js > /tmp/t.log 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" /tmp/t.log | head
grep -A20 "^not ok" /tmp/t.log | grep -v "^\s*at " | head -30
[ $rc = 0 ] || exit 1
for b in dist dist-base; do
  timeout 100 ncu --clock-control none --kernel-name regex:attn_ --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> /tmp/nk.err
  echo "== $b ($((SECONDS-t0)) s)"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 8
done 2>&1 | tee "$OUT/ncu-attn.txt"
for round in 1 2 3 4; do
  for b in dist dist-base; do
    echo "== $b (round $round)" >> /tmp/ab.log
    timeout 60 node $b/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/ab.log
    timeout 60 node $b/bench/gpu.js --items sample --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/ab.log
  done
done
node dist/bench/ab-sum.js /tmp/ab.log | tee "$OUT/ab.md"
echo "done ($((SECONDS-t0)) s)"
