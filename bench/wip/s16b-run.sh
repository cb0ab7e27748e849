# Session 16, second call (~150 s): the bf16 and model GPU suites with the batch-1 views of h, then batch-1 and
# batch-16 sampling, this build against dist-base (74db470), 4 rounds. carry [".device", "dist", "dist-base"]
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
timeout 330 node --test --test-concurrency=1 dist/test/cuda/bf16.test.js dist/test/cuda/model.test.js > "$OUT/s16b-tests.log" 2>&1
echo "tests rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/s16b-tests.log" | head
grep -A30 "^not ok" "$OUT/s16b-tests.log" | grep -v "^\s*at " | head -30
ROUNDS=4 bash bench/device-run.sh sample-ab | tail -4
