# Session 18's last call, on main with v32: bench:gpu with the PyTorch peer (every measure of the
# issue, the peer's beside it). carry [".device", "dist", ".peer"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
date -u
timeout 400 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -32 "$OUT/gpu.log"
date -u
