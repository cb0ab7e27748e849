# Session 17, v31 (the persistent grouped forward's tile order, no skip): tests, ncu sums against
# the build before (dist-base = 92e1ecd), Nsight's details of one fc1 and one fc2 launch at batch 1
# (is the grouped forward bound by L2, by the TMA's latency or by the products?), wall A/B.
# carry [".device", "dist", "dist-base"].
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
  for item in kernels kernels-sample; do
    timeout 60 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
      node $b/bench/gpu.js --items $item --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
    echo "== $b $item rc=$? $(node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -1)"
  done
done
for s in 240 241; do KERNEL=grouped_tma256p_nt_bf16 SKIP=$s bash bench/device-run.sh ncu-kernel 2>&1 | grep -v "^NVIDIA H200" | head -40; done
BUILDS="dist dist-base" ROUNDS=3 bash bench/device-run.sh sample-ab 2>&1 | tail -4
BUILDS="dist dist-base" bash bench/device-run.sh train-ab 2>&1 | tail -5
