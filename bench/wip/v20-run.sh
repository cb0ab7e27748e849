# The device call for wip/v20-blind (patches in bench/wip/v20, on 408b453), from main's checkout.
# (Without the branch: `git am` the patches on 408b453; d77a6d7 is then patch 0002's commit, 3c86a3a
# patch 0003's.) Here, first:
#   bash bench/build-base.sh wip/v20-blind dist-v20     # the branch's head (its tests included)
#   bash bench/build-base.sh d77a6d7 dist-att           # the 16-key attention step alone
#   bash bench/build-base.sh 3c86a3a dist-grp           # and the grouped warpgroup skip
#   bash bench/build-base.sh main                       # dist-base
#   node scripts/build.mjs                              # dist (main: device-run.sh's own tools)
# then one call with carry [".device", "dist", "dist-v20", "dist-att", "dist-grp", "dist-base"]
# (~500 s; the device allows 600 a call):
#   bash bench/wip/v20-run.sh
# 1. the branch's bf16 GPU tests (the attention twins, the 16-key step's bit-identity test);
# 2. the what-if bound: batch-1 sampling without the global keys' tile (WHATIF_SKIP_GLOBALS);
# 3. batch-1 and batch-16 sampling (the two attention / grouped builds and main), then training
#    (the branch's head too: its vector activation backward and GELU tables) alternated.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 280 node --test --test-concurrency=1 --test-name-pattern="attention|16-key|16-byte-vector|grouped|sampling with CUDA graphs|GELU epilogue|bf16 model|bf16 training" dist-v20/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head -20
grep -A25 "^not ok" "$OUT/tests.log" | head -60
timeout 200 node dist-v20/bench/kernel-cost.js --env MOE_DIFFUSEQ_DEFINES=WHATIF_SKIP_GLOBALS --out "$OUT/whatif.json" 2> "$OUT/whatif.err" | tee "$OUT/whatif.md"
ROUNDS=3 BUILDS="dist-att dist-grp dist-base" OUT=$OUT bash bench/device-run.sh sample-ab
BUILDS="dist-v20 dist-att dist-grp dist-base" OUT=$OUT bash bench/device-run.sh train-ab | tail -6
