#!/usr/bin/env bash
# Fills a kernel cache for a GPU arch without a GPU (`dattn compile
# --emit=cache`) with every module the examples and the benchmark
# configurations compile, and packs it as build/kernel-cache-<arch>.tgz.
# scripts/device_check.sh unpacks it into its cache when it is there, so a
# fresh GPU machine loads these kernels instead of compiling them (carry the
# .tgz with the binaries). The NVRTC here must be the GPU machine's version.
#
#   [DATTN_WARM_AB_DIRS="build-ab ..."] [DATTN_WARM_FAMILIES="fam ..."] \
#     scripts/warm_cache.sh [sm_90]
#   DATTN_WARM_AB_DIRS: folders with another version's dattn (device_check.sh
#   abexamples' DATTN_AB_DIRS, compare's build-baseline): its kernels of
#   every example and benchmark configuration too.
#   DATTN_WARM_FAMILIES: every example and benchmark configuration once more
#   with each family named (abexamples' family:NAME, compare's
#   DATTN_COMPARE_FAMILIES).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-sm_90}  # the GPU's arch; an sm_90 cache holds sm_90a kernels
dir=build/kernel-cache-$arch
rm -rf "$dir"
for f in examples/*.dattn bench/*.dattn; do
  build/bin/dattn compile "$f" --emit=cache --arch "$arch" -o "$dir" | sed 's/) .*/)/'
done
# The unions with a dilated member once more without dattn-split-unions
# (DATTN_SPLIT_UNIONS=0), for device_check.sh's split mode.
for f in causal_ring block_patterns window_global_random_gqa; do
  DATTN_SPLIT_UNIONS=0 build/bin/dattn compile "examples/$f.dattn" --emit=cache --arch "$arch" \
    -o "$dir" | sed 's/) .*/)/'
done
for d in ${DATTN_WARM_AB_DIRS:-}; do
  for f in examples/*.dattn bench/*.dattn; do
    "$d/dattn" compile "$f" --emit=cache --arch "$arch" -o "$dir" | sed "s|^|$d: |; s/) .*/)/"
  done
done
for fam in ${DATTN_WARM_FAMILIES:-}; do
  for f in examples/*.dattn bench/*.dattn; do
    build/bin/dattn compile "$f" --family "$fam" --emit=cache --arch "$arch" \
      -o "$dir" | sed "s|^|$fam: |; s/) .*/)/"
  done
done
tar czf "build/kernel-cache-$arch.tgz" -C "$dir" .
du -h "build/kernel-cache-$arch.tgz"
