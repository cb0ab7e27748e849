# The 17th session's last runs on main (v30 + v31), two calls because of the 600-s limit:
#   PART=tests bash bench/wip/s17-final-run.sh   every GPU test, then our base figures alone
#   PART=bench bash bench/wip/s17-final-run.sh   bench:gpu with the PyTorch peer (carry .peer too)
# carry [".device", "dist"] (and ".peer").
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
date -u
if [ "${PART:-tests}" = tests ]; then
  timeout 420 node --test --test-concurrency=1 dist/test/cuda/ > "$OUT/gpu-tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^# (tests|pass|fail|skipped|duration)|^not ok" "$OUT/gpu-tests.log" | head -20
  grep -A30 "^not ok" "$OUT/gpu-tests.log" | grep -v "^\s*at " | head -40
  timeout 120 node dist/bench/gpu.js --items sample,train --configs base --peer none --out "$OUT/ours.json" 2>&1 | grep "^base " | tee "$OUT/ours.log"
else
  timeout 400 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
  tail -32 "$OUT/gpu.log"
fi
date -u
