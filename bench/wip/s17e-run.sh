# Session 17's last call on main: (1) cross_entropy_rows*_f32 run 100 times on one input (every run
# the first's bits? its error against float64: bench/wip/xe-stress.mjs), (2) the crossEntropy test
# against float64, (3) bench:gpu with the PyTorch peer. carry [".device", "dist", ".peer"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
date -u
timeout 100 node bench/wip/xe-stress.mjs 100 2>&1 | tee "$OUT/xe-stress.log"
timeout 60 node --test --test-concurrency=1 --test-name-pattern="crossEntropy" dist/test/cuda/bf16.test.js > "$OUT/xe-tests.log" 2>&1
echo "crossEntropy tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok|crossEntropy (loss|dl)" "$OUT/xe-tests.log" | head -30
grep -A12 "^not ok" "$OUT/xe-tests.log" | grep -v "^\s*at " | head -30
date -u
timeout 390 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
tail -32 "$OUT/gpu.log"
date -u
