# v30 (wip/v30-blind, written without a GPU run): reduce_broadcast_f32 with its loads 16 ahead of the
# serial float32 adds (the same adds in the same order). From the branch's checkout after the build
# and bench/build-base.sh main dist-base; carry [".device", "dist", "dist-base"]. ~120 s.
# (1) the broadcast test, which now demands the CPU's bits; (2) ncu of a 16 x 2048 step's
# reduce_broadcast_f32 (the time embedding's gradient), main against the branch.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="addBroadcast and reduceBroadcast" dist/test/cuda/ops.test.js > "$OUT/v30-tests.log" 2>&1
echo "tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/v30-tests.log" | head
grep -A20 "^not ok" "$OUT/v30-tests.log" | grep -v "^\s*at " | head -20
for b in dist-base dist; do
  timeout 90 ncu --clock-control none --kernel-name regex:reduce_broadcast --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/rb.csv 2> "$OUT/rb.err"
  echo "== $b rc=$?"; node dist/bench/ncu-sum.js /tmp/rb.csv --runs 2 --top 2 | tail -2
done
