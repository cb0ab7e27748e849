# One device call for v14 (after `bash bench/build-base.sh main` and this build; carry [".device",
# "dist", "dist-base"]): the GPU suite, then base training, three rounds of this build (auto),
# this build with MOE_DIFFUSEQ_GROUPED=wgmma (no count read-backs at all) and main's build,
# alternately; then a host profile of this build's 64 x 512 step.
source .device/setup.sh >/dev/null
timeout 300 node --test --test-concurrency=1 dist/test/cuda/ > $OUT/tests.log 2>&1
grep -E "^# (tests|pass|fail)|^not ok|did not run|rel err" $OUT/tests.log | head -20
ab() { echo "== $1 $2" | tee -a $OUT/ab.log; env $2 timeout 80 node $1/bench/gpu.js --items train --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
for r in 1 2 3; do ab dist X=1; ab dist MOE_DIFFUSEQ_GROUPED=wgmma; ab dist-base X=1; done
mkdir -p $OUT/prof
node --cpu-prof --cpu-prof-dir=$OUT/prof dist/bench/gpu.js --items train --shape 64x512 --iters 20 --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base"
