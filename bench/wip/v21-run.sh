# One device call for wip/v21 (from its checkout): dist = wip/v21's head (the table-epilogue phases),
# dist-v21 = wip/v21~1 (v20's vector activation backward and GELU tables alone), dist-base = main.
#   bash bench/build-base.sh wip/v21~1 dist-v21; bash bench/build-base.sh main; node scripts/build.mjs
# carry [".device", "dist", "dist-v21", "dist-base"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 220 node --test --test-concurrency=1 --test-name-pattern="16-byte-vector|GELU epilogue|grouped|bf16 model|bf16 training|sampling with CUDA graphs|MoE permute" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head -20
grep -A25 "^not ok" "$OUT/tests.log" | head -60
ROUNDS=3 BUILDS="dist dist-v21 dist-base" OUT=$OUT bash bench/device-run.sh sample-ab
BUILDS="dist dist-v21 dist-base" OUT=$OUT bash bench/device-run.sh train-ab
KERNEL=grouped_wgmma_nt_bf16 SKIP=24 OUT=$OUT bash bench/device-run.sh ncu-kernel
OUT=$OUT bash bench/device-run.sh profile > /dev/null
head -45 "$OUT/profile.txt"
