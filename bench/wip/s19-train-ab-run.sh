# Session 19: training, main (steps queued back to back, and --sync-steps, the old measure) against
# session 18's main (cf17a65, dist-base: synced steps), alternated 5 rounds. carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
for round in 1 2 3 4 5; do
  for v in queued synced base; do
    echo "== $v (round $round)" >> "$OUT/train-ab.log"
    b=dist; f=""; [ $v = synced ] && f="--sync-steps"; [ $v = base ] && b=dist-base
    timeout 100 node $b/bench/gpu.js --items train --configs base --peer none $f --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/train-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/train-ab.log" | tee "$OUT/train-ab.md"
