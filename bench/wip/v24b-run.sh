# v24b (in dist): the persistent TMA grouped forward with thread 0's tile
# coordinates found once a tile (v24 found them at every step), and the TMA issue after the
# products (GW_TMA_LOAD_LATE what-if) in both TMA kernels. carry [".device", "dist"]
# (GW_TMA_LOAD_LATE lost, 8.07 / 15.07 ms against 7.78 / 7.52, and was removed from the kernels after this run.)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue" dist/test/cuda/bf16.test.js > "$OUT/v24b-tests.log" 2>&1
echo "tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/v24b-tests.log" | head
grep -A30 "^not ok" "$OUT/v24b-tests.log" | grep -v "^\s*at " | head -30
MOE_DIFFUSEQ_DEFINES=GW_TMA_LOAD_LATE timeout 120 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels" dist/test/cuda/bf16.test.js > "$OUT/v24b-tests-late.log" 2>&1
echo "tests (late) rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/v24b-tests-late.log" | head
nk() {  # label, then environment assignments for the run
  local label=$1
  shift
  env "$@" timeout 70 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -2
}
nk "v23 TMA" MOE_DIFFUSEQ_GROUPED_TMA=1
nk "v23 TMA, load late" MOE_DIFFUSEQ_GROUPED_TMA=1 MOE_DIFFUSEQ_DEFINES=GW_TMA_LOAD_LATE
nk "persistent" MOE_DIFFUSEQ_GROUPED_TMA=2
nk "persistent, load late (spills)" MOE_DIFFUSEQ_GROUPED_TMA=2 MOE_DIFFUSEQ_DEFINES=GW_TMA_LOAD_LATE
nk "v23 TMA again" MOE_DIFFUSEQ_GROUPED_TMA=1
