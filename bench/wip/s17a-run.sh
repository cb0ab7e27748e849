# Session 17, first call: v29 (ping-pong grouped forward, MOE_DIFFUSEQ_GROUPED_TMA=3, on wip/v29-blind)
# and v30 (reduce_broadcast_f32 loads ahead) verified and timed in one call. From a checkout of
# main + bench/wip/v29 + bench/wip/v30 (git am) after the build and bench/build-base.sh main
# dist-base; carry [".device", "dist", "dist-base"]. The call took 165 s on a cold machine (H200, session 17).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 90 node --test --test-concurrency=1 --test-name-pattern="addBroadcast and reduceBroadcast" dist/test/cuda/ops.test.js > "$OUT/v30-tests.log" 2>&1
echo "v30 tests rc=$? ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/v30-tests.log" | head
grep -A20 "^not ok" "$OUT/v30-tests.log" | grep -v "^\s*at " | head -20
t0=$SECONDS
timeout 180 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue" dist/test/cuda/bf16.test.js > "$OUT/v29-tests.log" 2>&1
rc29=$?
echo "v29 tests rc=$rc29 ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/v29-tests.log" | head
grep -A30 "^not ok" "$OUT/v29-tests.log" | grep -v "^\s*at " | head -40
# v30: ncu of reduce_broadcast, main against this build
for b in dist-base dist; do
  timeout 90 ncu --clock-control none --kernel-name regex:reduce_broadcast --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/rb.csv 2> "$OUT/rb.err"
  echo "== v30 $b rc=$?"; node dist/bench/ncu-sum.js /tmp/rb.csv --runs 2 --top 2 | tail -2
done
[ $rc29 = 0 ] || exit 1
nk() {  # label, then environment assignments for the run
  local label=$1
  shift
  env "$@" timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -2
}
nk "v29: ping-pong" MOE_DIFFUSEQ_GROUPED_TMA=3
nk "v24b (default)"
timeout 60 env MOE_DIFFUSEQ_GROUPED_TMA=3 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
  node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/nks.csv 2> "$OUT/nks.err"
echo "== batch 1, v29 rc=$?"; node dist/bench/ncu-sum.js /tmp/nks.csv --runs 2 --top 3 | tail -2
timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
  node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/nks.csv 2> "$OUT/nks.err"
echo "== batch 1, default rc=$?"; node dist/bench/ncu-sum.js /tmp/nks.csv --runs 2 --top 3 | tail -2
for round in 1 2 3; do
  for v in default v29; do
    echo "== $v (round $round)" >> "$OUT/v29-ab.log"
    env $([ $v = v29 ] && echo MOE_DIFFUSEQ_GROUPED_TMA=3) timeout 60 node dist/bench/gpu.js --items sample,train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/v29-ab.log"
  done
done
node dist/bench/ab-sum.js "$OUT/v29-ab.log" | tee "$OUT/v29-ab.md"
