# Session 19, s19d: the tied head's chunk of rows (XE_ROWS, a temporary override of nllChunk's 549 (gone since: nllChunk takes 2,198 under bf16)
# rows at V = 30,522): ncu of a 16 x 2048 step, peak memory, training alternated. carry [".device", "dist"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
for v in 549 2198 4396; do
  XE_ROWS=$v timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> /tmp/nk.err
  echo "== rows $v ($((SECONDS-t0)) s)"
  node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 60 | grep -E "total|xe_tied|cutlass" 
done > "$OUT/ncu-xe.txt"
cat "$OUT/ncu-xe.txt"
for v in 2198 4396; do
  echo "== rows $v" ; XE_ROWS=$v timeout 120 node dist/bench/gpu.js --items memory --configs base --peer none --out /tmp/m.json 2>&1 | grep "^base memory"
done | tee "$OUT/mem.txt"
for round in 1 2; do
  for v in 549 2198 4396; do
    echo "== rows$v (round $round)" >> /tmp/ab.log
    XE_ROWS=$v timeout 100 node dist/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> /tmp/ab.log
  done
done
node dist/bench/ab-sum.js /tmp/ab.log | tee "$OUT/train-ab.md"
echo "done ($((SECONDS-t0)) s)"
