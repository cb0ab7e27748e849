# Session 17, v31b: the persistent grouped forward's tile order from a table built once a launch in
# shared memory (warp 0), idle warpgroups skipping their products; V31_NO_SKIP and V31_NO_ORDER
# (MOE_DIFFUSEQ_DEFINES) take one part out. From the s17 checkout after the build and
# bench/build-base.sh <the build without v31> dist-base; carry [".device", "dist", "dist-base"].
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
t0=$SECONDS
timeout 180 node --test --test-concurrency=1 --test-name-pattern="grouped GEMM kernels|GELU epilogue" dist/test/cuda/bf16.test.js > "$OUT/tests.log" 2>&1
rc=$?
echo "tests rc=$rc ($((SECONDS-t0)) s)"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests.log" | head
grep -A30 "^not ok" "$OUT/tests.log" | grep -v "^\s*at " | head -40
[ $rc = 0 ] || exit 1
for v in base v31b noskip noorder; do
  b=dist; defs=
  case $v in base) b=dist-base ;; noskip) defs=V31_NO_SKIP ;; noorder) defs=V31_NO_ORDER ;; esac
  for item in kernels kernels-sample; do
    MOE_DIFFUSEQ_DEFINES=$defs timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
      node $b/bench/gpu.js --items $item --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
    echo "== $v $item rc=$? $(node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -1)"
    cp /tmp/nk.csv "$OUT/nk-$v-$item.csv"
  done
done
BUILDS="dist dist-base" ROUNDS=3 bash bench/device-run.sh sample-ab 2>&1 | tail -4
