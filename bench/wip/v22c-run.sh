# v22c: the 256-row grouped forward (in flight) at every size (dist-256, wip/v22 with
# GROUPED_WGMMA256_ROWS = 0, kernels copied in) against main (dist): its model, training and graph
# tests, then sampling 4 rounds and training 2 rounds alternated. carry [".device", "dist", "dist-256"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 220 node --test --test-concurrency=1 --test-name-pattern="bf16 model|bf16 training|sampling with CUDA graphs|generate on a GPU|MoE permute" dist-256/test/cuda/bf16.test.js > "$OUT/tests256.log" 2>&1
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests256.log" | head
grep -A30 "^not ok" "$OUT/tests256.log" | head -60
ROUNDS=4 BUILDS="dist-256 dist" OUT=$OUT bash bench/device-run.sh sample-ab
BUILDS="dist-256 dist" OUT=$OUT bash bench/device-run.sh train-ab
