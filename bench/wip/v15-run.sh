source .device/setup.sh >/dev/null
timeout 100 node --test --test-concurrency=1 --test-name-pattern="base config|whole model: diffusionLoss" dist/test/cuda/ > $OUT/tests.log 2>&1
grep -E "^# (tests|pass|fail)|^not ok" $OUT/tests.log | head
ab() { echo "== $1" | tee -a $OUT/ab.log; timeout 60 node $1/bench/gpu.js --items train --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
for r in 1 2 3; do ab dist; ab dist-base; done
