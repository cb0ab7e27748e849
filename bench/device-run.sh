#!/usr/bin/env bash
# One call of the GPU machine's time, in the order a session needs it (see ../shared/GPU.md for
# .device/ and the device tool): run from the repository root there, with `carry: [".device",
# "dist"]` (and ".peer" for `bench`), after `node scripts/build.mjs` here.
#
#   bash bench/device-run.sh tests            the GPU test suite (~200 s on an H200)
#   bash bench/device-run.sh ops              the hot ops alone, default kernels and mma.sync (~10 s)
#   bash bench/device-run.sh profile          a base 16 x 2048 step's kernel times from Nsight
#                                             Compute, summed by kernel (~60 s; SHAPE=64x512 for
#                                             another step)
#   bash bench/device-run.sh profile-sample   the same for sampling one 2048-token document (10 calls)
#   bash bench/device-run.sh host-profile     the host's time in a base step (node --cpu-prof, summed
#                                             by bench/cpuprof-sum.ts; SHAPE as for profile; ~30 s)
#   bash bench/device-run.sh host-profile-sample  the same for sampling one 2048-token document
#   bash bench/device-run.sh bench            bench:gpu with the PyTorch peer (~330 s)
#   bash bench/device-run.sh train-ab         base training, this build (dist) and dist-base
#                                             (bench/build-base.sh <ref>; carry "dist-base" too)
#                                             alternately, twice each (~90 s)
#   bash bench/device-run.sh kernel-cost      what each of our kernels adds to batch-1 sampling's wall
#                                             time: each launched twice against the plain run
#                                             (bench/kernel-cost.ts; ~70 s; ITEM=train for a 16 x 2048
#                                             step, ~8 s a run: set KERNELS=a,b and ROUNDS=1 there)
#   bash bench/device-run.sh tests profile    several, in that order; `bench` runs only if the
#                                             tests (when asked for) passed
#
# Everything worth keeping goes to $OUT (the device tool brings it back).
set -uo pipefail
source .device/setup.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ok=1
for what in "$@"; do
  case "$what" in
    tests)
      timeout 300 node --test --test-concurrency=1 dist/test/cuda/ > "$OUT/tests.log" 2>&1
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
      node dist/bench/ncu-sum.js /tmp/step.csv --runs 2 --top 60 | tee "$OUT/profile.txt"
      ;;
    profile-sample)
      timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
        node dist/bench/gpu.js --items kernels-sample --configs base --peer none --out /tmp/ks.json > /tmp/sample.csv 2> "$OUT/profile-sample.err"
      # a warm-up sampling run, then the profiled one: halve to one
      node dist/bench/ncu-sum.js /tmp/sample.csv --runs 2 --top 60 | tee "$OUT/profile-sample.txt"
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
      timeout 500 node dist/bench/kernel-cost.js --item "${ITEM:-sample}" --rounds "${ROUNDS:-3}" ${KERNELS:+--kernels "$KERNELS"} --out "$OUT/kernel-cost.json" 2> "$OUT/kernel-cost.err" | tee "$OUT/kernel-cost.md"
      ;;
    train-ab)
      # builds side by side in one call: the machines drift between calls (see bench/build-base.sh)
      [ -d dist-base ] || { echo "train-ab: no dist-base/ (bench/build-base.sh <ref>, carry it)" >&2; exit 2; }
      for round in 1 2; do
        for build in dist dist-base; do
          echo "== $build (round $round)" | tee -a "$OUT/train-ab.log"
          timeout 100 node $build/bench/gpu.js --items train --configs base --peer none --out /tmp/ab.json 2>&1 | grep "^base train" | tee -a "$OUT/train-ab.log"
        done
      done
      ;;
    *)
      echo "unknown step '$what' (tests, ops, profile, profile-sample, host-profile, host-profile-sample, bench, kernel-cost, train-ab)" >&2
      exit 2
      ;;
  esac
done
