# Session 19's last call, on main: the bf16 model test (the tied head's new chunk), then bench:gpu
# with the PyTorch peer (every measure of the issue, the peer's beside it). carry [".device", "dist", ".peer"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
date -u
t0=$SECONDS
timeout 120 node --test --test-concurrency=1 --test-name-pattern="bf16 model: the base config" dist/test/cuda/bf16.test.js > /tmp/t.log 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" /tmp/t.log | head
[ $rc = 0 ] || exit 1
timeout 420 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -32 "$OUT/gpu.log"
date -u
