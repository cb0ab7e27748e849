# Session 19: batch-1 and batch-16 sampling, main against session 18's main (cf17a65, dist-base),
# alternated 5 rounds: did this session's changes move sampling? carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
for round in 1 2 3 4 5; do
  for b in dist dist-base; do
    echo "== $b (round $round)" >> "$OUT/sample-ab.log"
    timeout 100 node $b/bench/gpu.js --items sample --configs base --peer none --out /tmp/s.json 2>&1 | grep "^base sample" >> "$OUT/sample-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/sample-ab.log" | tee "$OUT/sample-ab.md"
