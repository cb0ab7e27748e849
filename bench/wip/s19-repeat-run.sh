# Session 19, after the peer run: training alone four more times (the run-to-run spread of each shape),
# on main. carry [".device", "dist"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
for round in 1 2 3 4; do
  echo "== main (round $round)" >> "$OUT/train-repeat.log"
  timeout 100 node dist/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/train-repeat.log"
done
cat "$OUT/train-repeat.log"
