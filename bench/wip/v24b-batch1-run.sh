# v24b (main at 538ec60): its tests with 256-row
# tiles at every size, the epilogue's what-if, and batch 1 on the persistent kernel.
# carry [".device", "dist"]
# (Its WHATIF_NO_EPILOGUE figure, 3.06 ms, was wrong: ptxas dropped three of four products; the kernel now keeps them, 4.86 ms.)
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
source .device/setup.sh >/dev/null
MOE_DIFFUSEQ_WGMMA256_ROWS=0 timeout 150 node --test --test-concurrency=1 \
  --test-name-pattern="bf16 model|bf16 training|sampling with CUDA graphs|generate on a GPU" dist/test/cuda/bf16.test.js > "$OUT/tests-p.log" 2>&1
echo "tests (persistent everywhere) rc=$?"; grep -E "^# (tests|pass|fail)|^not ok" "$OUT/tests-p.log" | head
grep -A30 "^not ok" "$OUT/tests-p.log" | grep -v "^\s*at " | head -30
nk() {  # label, item, then environment assignments for the run
  local label=$1 item=$2
  shift 2
  env "$@" timeout 70 ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items $item --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2> "$OUT/nk.err"
  echo "== $label rc=$?"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -3
}
nk "step, persistent" "kernels --shape 16x2048"
nk "step, persistent without its epilogue (what-if)" "kernels --shape 16x2048" MOE_DIFFUSEQ_DEFINES=WHATIF_NO_EPILOGUE
nk "batch 1 sampling, default (128-row tiles)" kernels-sample
nk "batch 1 sampling, 256-row persistent" kernels-sample MOE_DIFFUSEQ_WGMMA256_ROWS=0
for round in 1 2 3 4; do
  for rows in 16384 0; do
    echo "== rows256 from $rows (round $round)" >> "$OUT/b1.log"
    MOE_DIFFUSEQ_WGMMA256_ROWS=$rows timeout 60 node dist/bench/gpu.js --items sample --batches 1 --configs base --peer none --out /tmp/b1.json 2>&1 | grep "^base " >> "$OUT/b1.log"
  done
done
cat "$OUT/b1.log"
