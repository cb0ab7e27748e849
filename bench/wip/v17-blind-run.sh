# The device calls for wip/v17-blind (after `node scripts/build.mjs` and `bash bench/build-base.sh
# main` here, carry [".device", "dist", "dist-base"]); stages, each within one call's 600 s:
#   bash bench/wip/v17-blind-run.sh tests          the GPU suite (~230 s): the prepared scoring table,
#                                                  the gathered fc1 rows without pre-activations, the
#                                                  GELU backward in fc2's NN epilogue, kept activations
#   bash bench/wip/v17-blind-run.sh ab profiles    base training against main's build (dist-base), with
#                                                  MOE_DIFFUSEQ_GELU_NN=0 and MOE_DIFFUSEQ_KEEP_ACT=1 arms;
#                                                  the memory rows with and without the kept activations;
#                                                  batch-1 sampling against main's build; then the
#                                                  sampling run's and the 16 x 2048 step's ncu profiles
#                                                  (~480 s)
source .device/setup.sh >/dev/null
tr() { echo "== train $1 $2" | tee -a $OUT/ab.log; env $2 timeout 100 node $1/bench/gpu.js --items train --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
sa() { echo "== sample $1" | tee -a $OUT/ab.log; timeout 60 node $1/bench/gpu.js --items sample --batches 1 --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
for stage in "$@"; do
  case "$stage" in
    tests)
      timeout 300 node --test --test-concurrency=1 dist/test/cuda/ > $OUT/tests.log 2>&1
      grep -E "^# (tests|pass|fail)|^not ok" $OUT/tests.log | head -20
      grep -A25 "^not ok" $OUT/tests.log | head -60
      ;;
    ab)
      for r in 1 2; do tr dist; tr dist-base; tr dist MOE_DIFFUSEQ_GELU_NN=0; tr dist MOE_DIFFUSEQ_KEEP_ACT=1; done
      for k in 0 1; do echo "== memory KEEP_ACT=$k" | tee -a $OUT/ab.log; MOE_DIFFUSEQ_KEEP_ACT=$k timeout 100 node dist/bench/gpu.js --items memory --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; done
      for r in 1 2 3; do sa dist; sa dist-base; done
      ;;
    profiles)
      OUT=$OUT bash bench/device-run.sh profile-sample > /dev/null 2>&1; head -30 $OUT/profile-sample.txt
      OUT=$OUT bash bench/device-run.sh profile > /dev/null 2>&1; head -30 $OUT/profile.txt
      ;;
    *) echo "unknown stage $stage (tests, ab, profiles)" >&2; exit 2 ;;
  esac
done
