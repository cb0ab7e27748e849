# The 14th session's last run: bench:gpu with the PyTorch peer on main (v24b, v25), then sampling alone with
# the peer (its CUDA-graph sampling, which the first run's peer deadline cuts). carry [".device", "dist", ".peer"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 70 env MOE_DIFFUSEQ_DEFINES=WHATIF_NO_EPILOGUE ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
  node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2>/dev/null
echo "== the persistent kernel without its epilogue (what-if, 4 HGMMA kept)"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -2
date -u
timeout 390 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -32 "$OUT/gpu.log"
date -u
timeout 140 node dist/bench/gpu.js --items sample --configs base --peer .peer --out "$OUT/gpu-sample.json" > "$OUT/gpu-sample.log" 2>&1
tail -14 "$OUT/gpu-sample.log"
date -u
