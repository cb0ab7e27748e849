# v23: grouped_tma256_nt_bf16 (the 256-row grouped forward's stages by TMA). From wip/v23-tma's
# checkout after node scripts/build.mjs; carry [".device", "dist"]. The twin and GELU-table tests
# (tma256 against cuBLAS, and bit for bit against the cp.async 256-row kernel), then the grouped
# forward's ncu time in a 16 x 2048 step, TMA against cp.async (MOE_DIFFUSEQ_GROUPED_TMA=0).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 110 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -B2 -A30 "^not ok" "$OUT/tests.log" | grep -v "^\s*at " | head -50
nk() {  # label, then environment assignments for the run
  local label=$1
  shift
  env "$@" timeout 70 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -3
}
nk "step 256 TMA" MOE_DIFFUSEQ_GROUPED_TMA=1
nk "step 256 cp.async" MOE_DIFFUSEQ_GROUPED_TMA=0
