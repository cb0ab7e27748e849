# v25 (wip/v25-blind, written without device time): moe_order_small with every chunk's per-warp
# counts kept, three block barriers instead of three a chunk. From the branch's checkout:
#   bash bench/build-base.sh main; node scripts/build.mjs; carry [".device", "dist", "dist-base"] (~150 s)
# 1. the MoE routing tests (order and slot bit for bit the CPU's, one-block and chunked orders) and
#    CUDA-graph sampling; 2. the kernel's ncu time at batch 1, both builds; 3. batch-1 sampling
#    alternated with main, four rounds.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="MoE|moeRoute" dist/test/cuda/ops.test.js > "$OUT/tests.log" 2>&1
timeout 100 node --test --test-concurrency=1 --test-name-pattern="sampling with CUDA graphs" dist/test/cuda/bf16.test.js > "$OUT/tests-graphs.log" 2>&1
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" "$OUT/tests-graphs.log" | head
for b in dist dist-base; do
  timeout 70 ncu --clock-control none --kernel-name moe_order_small --metrics gpu__time_duration.sum --csv --page raw \
    node "$b/bench/gpu.js" --items kernels-sample --configs base --peer none --out /tmp/k.json > /tmp/o.csv 2>/dev/null
  echo "== $b"; node dist/bench/ncu-sum.js /tmp/o.csv --runs 2 --top 2 | tail -2
done
ROUNDS=4 BATCHES=1 BUILDS="dist dist-base" OUT=$OUT bash bench/device-run.sh sample-ab
