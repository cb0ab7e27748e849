# The session's last call: main's twin / GELU-table tests (the 256-row kernel's default and the
# 128-row backends), then bench:gpu with the PyTorch peer. carry [".device", "dist", ".peer"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 120 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue|16-byte-vector" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -A30 "^not ok" "$OUT/tests.log" | head -40
timeout 420 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -30 "$OUT/gpu.log"
