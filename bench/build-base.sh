#!/usr/bin/env bash
# Builds another commit of this repository into dist-base/ (ignored), with its CUDA kernel sources
# beside its compiled modules, so that one device call can time both builds side by side:
#
#   bash bench/build-base.sh main            # or any commit, branch or tag
#   # then, on the device: carry [".device", "dist", "dist-base"] and
#   bash bench/device-run.sh train-ab        # training, this build and dist-base alternately
#
#   bash bench/build-base.sh wip/x dist-x    # into another folder (dist-*, ignored), for
#   # BUILDS="dist dist-x dist-base" bash bench/device-run.sh sample-ab   (carry dist-x too)
#
# The machines are shared and drift by several per cent between calls, so a change is judged by the
# two builds in one call, not against a figure from an earlier call.
set -euo pipefail
ref=${1:?usage: bench/build-base.sh <git ref> [dist-<name>]}
out=${2:-dist-base}
case "$out" in dist-*) ;; *) echo "bench/build-base.sh: the folder must be named dist-<name> (ignored by git), got $out" >&2; exit 2 ;; esac
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/wt" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$root" worktree add -q --detach "$tmp/wt" "$ref"
ln -s "$root/node_modules" "$tmp/wt/node_modules"
(cd "$tmp/wt" && node scripts/build.mjs)
rm -rf "${root:?}/$out"
cp -r "$tmp/wt/dist" "$root/$out"
# nvrtc.ts looks for the kernels next to its compiled module first
cp -r "$tmp/wt/src/backend/cuda/kernels" "$root/$out/src/backend/cuda/kernels"
echo "$out: $(git -C "$root" rev-parse --short "$ref") ($ref)"
