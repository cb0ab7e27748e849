# which of this session's changes moved the wall time. Alternated, 3 rounds:
# main; main with v24b off by its variables (v23's kernel, 256-row tiles from 16,384 rows); main
# without v25 (dist-nov25); the session's start (dist-base). carry [".device", "dist", "dist-nov25", "dist-base"]
# dist-nov25: bash bench/build-base.sh <main with b8c6163 reverted> dist-nov25; dist-base: bash bench/build-base.sh 0b3c260
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
for round in 1 2 3; do
  for v in main v24b-off nov25 base; do
    b=dist; envs=""
    case $v in v24b-off) envs="MOE_DIFFUSEQ_GROUPED_TMA=1 MOE_DIFFUSEQ_WGMMA256_ROWS=16384";; nov25) b=dist-nov25;; base) b=dist-base;; esac
    echo "== $v (round $round)" >> "$OUT/ab.log"
    env $envs timeout 60 node $b/bench/gpu.js --items sample,train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/ab.log" | tee "$OUT/ab.md"
