# v24 (wip/v24-blind, written without device time): grouped_tma256p_nt_bf16, the persistent form of
# the 256-row TMA grouped forward (MOE_DIFFUSEQ_GROUPED_TMA=2). From the branch's checkout after
# node scripts/build.mjs; carry [".device", "dist"] (~250 s).
# 1. the twin and GELU-table tests (tma256p bit for bit against the cp.async 256-row kernel, with
#    blocks walking several tiles), then the model, training, CUDA-graph and generate tests with it
#    at every size; 2. the grouped forward's ncu time in a 16 x 2048 step, persistent against not;
#    3. training wall time with it against without (kernel-cost --env, three rounds).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -B2 -A30 "^not ok" "$OUT/tests.log" | grep -v "^\s*at " | head -50
MOE_DIFFUSEQ_GROUPED_TMA=2 MOE_DIFFUSEQ_WGMMA256_ROWS=0 timeout 110 node --test --test-concurrency=1 \
  --test-name-pattern="bf16 model|bf16 training|sampling with CUDA graphs|generate on a GPU" dist/test/cuda/bf16.test.js > "$OUT/tests-p.log" 2>&1
echo "tests (persistent everywhere) rc=$?"
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests-p.log" | head
nk() {  # label, then environment assignments for the run
  local label=$1
  shift
  env "$@" timeout 70 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -3
}
nk "step 256 TMA" MOE_DIFFUSEQ_GROUPED_TMA=1
nk "step 256 TMA persistent" MOE_DIFFUSEQ_GROUPED_TMA=2
timeout 90 node dist/bench/kernel-cost.js --item train --rounds 3 --env MOE_DIFFUSEQ_GROUPED_TMA=2 --out "$OUT/kc.json" 2> "$OUT/kc.err" | tee "$OUT/kc.md"
cat "$OUT/kc.err" | grep round
