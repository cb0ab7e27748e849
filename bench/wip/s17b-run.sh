# Session 17, v31: the persistent grouped forward's tiles whole-first, partial last tiles by quarters,
# idle warpgroups skipping their products. From the s17 checkout after the build and
# bench/build-base.sh HEAD~1 dist-base (the build without v31); carry [".device", "dist", "dist-base"].
# (1) the grouped tests (bit for bit the cp.async 256-row kernel; ~90 s), (2) ncu of the grouped
# forwards of a 16 x 2048 step and a batch-1 run, both builds, (3) wall A/B, 3 rounds alternated.
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
for b in dist-base dist; do
  timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== step $b rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -2
  timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node $b/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/nks.csv 2> "$OUT/nks.err"
  echo "== batch 1 $b rc=$?"; node dist/bench/ncu-sum.js /tmp/nks.csv --runs 2 --top 3 | tail -2
  cp /tmp/nks.csv "$OUT/nks-$b.csv"
done
BUILDS="dist dist-base" ROUNDS=3 bash bench/device-run.sh sample-ab 2>&1 | tail -8
BUILDS="dist dist-base" ROUNDS=3 bash bench/device-run.sh train-ab 2>&1 | tail -8
