# The 16th session's last run: bench:gpu with the PyTorch peer on main (s16: LayerNorm loads first, fixed weights, batch-1 views), then sampling alone with
# the peer (its CUDA-graph sampling, which the first run's peer deadline cuts). carry [".device", "dist", ".peer"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
date -u
timeout 390 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -32 "$OUT/gpu.log"
date -u
timeout 140 node dist/bench/gpu.js --items sample --configs base --peer .peer --out "$OUT/gpu-sample.json" > "$OUT/gpu-sample.log" 2>&1
tail -14 "$OUT/gpu-sample.log"
date -u
