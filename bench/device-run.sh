#!/usr/bin/env bash
# One call of the GPU machine's time, in the order a session needs it (see ../shared/GPU.md for
# .device/ and the device tool): run from the repository root there, with `carry: [".device",
# "dist"]` (and ".peer" for `bench`), after `node scripts/build.mjs` here.
#
#   bash bench/device-run.sh tests            the GPU test suite (~200 s on an H200)
#   bash bench/device-run.sh ops              the hot ops alone, default kernels and mma.sync (~10 s)
#   bash bench/device-run.sh profile          a base 16 x 2048 step's kernel times from Nsight
#                                             Compute, summed by kernel (~60 s; SHAPE=64x512 for
#                                             another step; TOP=n lists n kernels, 60 by default)
#   bash bench/device-run.sh profile-sample   the same for sampling one 2048-token document (10 calls; BATCHES=16: a batch of 16)
#   bash bench/device-run.sh ncu-trace        every launch of batch-1 sampling with its duration, in
#                                             order (ncu-trace.csv.gz; ~40 s)
#   KERNEL=k SKIP=n bash bench/device-run.sh ncu-kernel   Nsight Compute's sections for one launch
#                                             of kernel k in batch-1 sampling (~30 s)
#   bash bench/device-run.sh host-profile     the host's time in a base step (node --cpu-prof, summed
#                                             by bench/cpuprof-sum.ts; SHAPE as for profile; ~30 s)
#   bash bench/device-run.sh host-profile-sample  the same for sampling one 2048-token document
#   bash bench/device-run.sh bench            bench:gpu with the PyTorch peer (~330 s)
#   bash bench/device-run.sh sample-ab        base sampling (BATCHES=1 for batch 1 alone), this build and
#                                             dist-base alternately, ROUNDS (4) rounds, medians (~60 s);
#                                             BUILDS="dist dist-x dist-base" for more builds (also train-ab)
#   bash bench/device-run.sh train-ab         base training, this build (dist) and dist-base
#                                             (bench/build-base.sh <ref>; carry "dist-base" too)
#                                             alternately, twice each (~90 s)
#   bash bench/device-run.sh kernel-cost      what each of our kernels adds to batch-1 sampling's wall
#                                             time: each launched twice against the plain run
#                                             (bench/kernel-cost.ts; ~70 s; ITEM=train for a 16 x 2048
#                                             step, ~8 s a run: set KERNELS=a,b and ROUNDS=1 there;
#                                             ENV=NAME=v1,v2 times those settings instead)
#   bash bench/device-run.sh tests profile    several, in that order; `bench` runs only if the
#                                             tests (when asked for) passed
#
# Everything worth keeping goes to $OUT (the device tool brings it back).
set -uo pipefail
source .device/setup.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ok=1
# ab <name> <rounds> <bench:gpu arguments>: the builds in BUILDS (default: this one, dist, and
# dist-base from bench/build-base.sh) side by side in one call, since the machines drift between
# calls; each round runs every build once. Logs $OUT/<name>.log, prints the medians (ab-sum).
ab() {
  local name=$1 rounds=$2 build round
  shift 2
  for build in ${BUILDS:-dist dist-base}; do
    [ -d "$build" ] || { echo "$name: no $build/ (bench/build-base.sh <ref> [dist-<name>], and carry it)" >&2; exit 2; }
  done
  for round in $(seq 1 "$rounds"); do
    for build in ${BUILDS:-dist dist-base}; do
      echo "== $build (round $round)" >> "$OUT/$name.log"
      timeout 100 node "$build/bench/gpu.js" "$@" --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base " >> "$OUT/$name.log"
    done
  done
  node dist/bench/ab-sum.js "$OUT/$name.log" | tee "$OUT/$name.md"
}
for what in "$@"; do
  case "$what" in
    tests)
      # TESTS=ops (say) runs dist/test/cuda/ops.test.js alone; a cold machine takes ~330 s for all
      files=dist/test/cuda/
      [ -n "${TESTS:-}" ] && files=dist/test/cuda/$TESTS.test.js
      timeout 480 node --test --test-concurrency=1 $files > "$OUT/tests.log" 2>&1
      grep -E "^# (tests|pass|fail)|^not ok|rel err" "$OUT/tests.log" | head -30
      grep -q "^# fail 0" "$OUT/tests.log" || ok=0
      ;;
    ops)
      timeout 120 node dist/bench/gpu.js --items ops --configs base --peer none --out "$OUT/ops.json" > "$OUT/ops.log" 2>&1
      grep -vE "^\s*$" "$OUT/ops.log" | head -40
      ;;
    profile)
      timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
        node dist/bench/gpu.js --items kernels --shape "${SHAPE:-16x2048}" --configs base --peer none --out /tmp/kernels.json > /tmp/step.csv 2> "$OUT/profile.err"
      # --items kernels runs the step twice (warm-up, profiled): halve to one step
      node dist/bench/ncu-sum.js /tmp/step.csv --runs 2 --top ${TOP:-60} | tee "$OUT/profile.txt"
      ;;
    profile-sample)
      timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
        node dist/bench/gpu.js --items kernels-sample ${BATCHES:+--batches "$BATCHES"} --configs base --peer none --out /tmp/ks.json > /tmp/sample.csv 2> "$OUT/profile-sample.err"
      # a warm-up sampling run, then the profiled one: halve to one
      node dist/bench/ncu-sum.js /tmp/sample.csv --runs 2 --top ${TOP:-60} | tee "$OUT/profile-sample.txt"
      ;;
    ncu-trace)
      # every launch of batch-1 sampling (warm-up run, then the profiled one) with its duration, in
      # launch order: which kernels a denoiser call runs between the big ones
      timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
        node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/trace.csv 2> "$OUT/ncu-trace.err"
      gzip -c /tmp/trace.csv > "$OUT/ncu-trace.csv.gz"
      ;;
    ncu-kernel)
      # one launch of KERNEL in batch-1 sampling (SKIP launches of it first: the warm-up run's
      # come first), Nsight Compute's full sections: where its time goes (stalls, occupancy, memory)
      timeout 200 ncu --clock-control none --kernel-name "$KERNEL" --launch-skip "${SKIP:-0}" --launch-count 1 \
        --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --page details \
        --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_elapsed,lts__t_bytes.sum.per_second \
        node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > "$OUT/ncu-$KERNEL-$SKIP.txt" 2> "$OUT/ncu-$KERNEL.err"
      grep -E "Duration|Registers|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issue Slot|Compute \(SM\) Throughput|Memory Throughput|Waves Per SM|Stall|One or More|No Eligible|gmma|lts__t_bytes" "$OUT/ncu-$KERNEL-$SKIP.txt" | head -40
      ;;
    host-profile)
      rm -rf /tmp/cpuprof && mkdir -p /tmp/cpuprof
      timeout 120 node --cpu-prof --cpu-prof-dir=/tmp/cpuprof dist/bench/gpu.js --items train --shape "${SHAPE:-16x2048}" --iters 20 --configs base --peer none --out /tmp/hp.json 2>&1 | grep "^base"
      node dist/bench/cpuprof-sum.js /tmp/cpuprof/*.cpuprofile --top 30 --callers toArray | tee "$OUT/host-profile.txt"
      ;;
    host-profile-sample)
      rm -rf /tmp/cpuprof && mkdir -p /tmp/cpuprof
      timeout 120 node --cpu-prof --cpu-prof-dir=/tmp/cpuprof dist/bench/gpu.js --items sample --batches 1 --configs base --peer none --out /tmp/hp.json 2>&1 | grep "^base"
      node dist/bench/cpuprof-sum.js /tmp/cpuprof/*.cpuprofile --top 40 --callers "call driver" | tee "$OUT/host-profile-sample.txt"
      ;;
    bench)
      if [ "$ok" = 1 ]; then
        timeout 420 node dist/bench/gpu.js --peer .peer --peer-deadline 230 --out "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
        tail -40 "$OUT/gpu.log"
      else
        echo "bench skipped: the GPU tests failed (see $OUT/tests.log)"
      fi
      ;;
    kernel-cost)
      timeout 500 node dist/bench/kernel-cost.js --item "${ITEM:-sample}" --rounds "${ROUNDS:-3}" ${KERNELS:+--kernels "$KERNELS"} ${ENV:+--env "$ENV"} --out "$OUT/kernel-cost.json" 2> "$OUT/kernel-cost.err" | tee "$OUT/kernel-cost.md"
      ;;
    sample-ab)
      # batch-1 and batch-16 sampling (BATCHES=1: batch 1 alone), ROUNDS (4) rounds
      ab sample-ab "${ROUNDS:-4}" --items sample ${BATCHES:+--batches "$BATCHES"}
      ;;
    train-ab)
      ab train-ab 2 --items train
      ;;
    *)
      echo "unknown step '$what' (tests, ops, profile, profile-sample, ncu-trace, ncu-kernel, host-profile, host-profile-sample, bench, kernel-cost, sample-ab, train-ab)" >&2
      exit 2
      ;;
  esac
done
