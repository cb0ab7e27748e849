# v26 (written, not run): where the persistent grouped forward's epilogue time goes (what-ifs, wrong
# numbers): without its global stores, without its GELU-table lookups; and the default again.
# carry [".device", "dist"]
set -u
source .device/setup.sh >/dev/null
for d in WHATIF_NO_STORES WHATIF_NO_GELU none; do
  timeout 60 env MOE_DIFFUSEQ_DEFINES=$d ncu --clock-control none --kernel-name regex:grouped_.*_nt_bf16 --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu.js --items kernels --shape 16x2048 --configs base --peer none --out /tmp/k.json > /tmp/nk.csv 2>/dev/null
  echo "== $d"; node dist/bench/ncu-sum.js /tmp/nk.csv --runs 2 --top 3 | tail -2
done
