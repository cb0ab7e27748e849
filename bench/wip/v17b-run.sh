# wip/v17b (v17 without the gather kernel and the GELU-backward epilogue) in one device call, after
# `node scripts/build.mjs` and `bash bench/build-base.sh main`, carry [".device", "dist", "dist-base"]:
#   bash bench/wip/v17b-run.sh probe tests ab
source .device/setup.sh >/dev/null
tr() { echo "== train $1 $2" | tee -a $OUT/ab.log; env $2 timeout 100 node $1/bench/gpu.js --items train --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
sa() { echo "== sample $1 $2" | tee -a $OUT/ab.log; timeout 60 node $1/bench/gpu.js --items sample --batches $2 --configs base --peer none --out /tmp/t.json 2>&1 | grep "^base " | tee -a $OUT/ab.log; }
for stage in "$@"; do
  case "$stage" in
    probe) for d in dist dist-base; do timeout 60 node bench/wip/leak-probe.mjs $d 2>&1 | tail -20; done ;;
    tests)
      timeout 200 node --test --test-concurrency=1 dist/test/cuda/bf16.test.js > $OUT/tests.log 2>&1
      grep -E "^# (tests|pass|fail)|^not ok" $OUT/tests.log | head -20
      grep -A25 "^not ok" $OUT/tests.log | head -40
      ;;
    ab)
      for r in 1 2; do tr dist; tr dist-base; tr dist MOE_DIFFUSEQ_KEEP_ACT=1; done
      for r in 1 2 3; do sa dist 1; sa dist-base 1; done
      sa dist 16; sa dist-base 16
      ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
