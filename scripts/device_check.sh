#!/usr/bin/env bash
# On the GPU machine (binaries built here and carried): GPU tests, every
# example through `dattn run --device gpu --check`, then the benchmark.
# Logs go to $OUT (the device tool returns them); a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/dattn-out}
mkdir -p "$OUT"
export DATTN_CACHE_DIR=/tmp/dattn-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
build/bin/dattn info | tee -a "$OUT/gpu.txt"
mode=${1:-all}
status=0
if [ "$mode" = all ] || [ "$mode" = tests ]; then
  # Shards in parallel: NVRTC compiles dominate and the machine has 16 cores.
  for i in 0 1 2 3 4 5 6 7; do
    GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i build/tests/gpu/dattn_gpu_tests \
      > "$OUT/gpu_tests.$i.log" 2>&1 &
  done
  wait
  cat "$OUT"/gpu_tests.*.log > "$OUT/gpu_tests.log"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$OUT/gpu_tests.log" | sort | uniq -c
  grep -E "^\[  FAILED  \]" "$OUT/gpu_tests.log" | sort -u | head -40
  grep -q "^\[  FAILED  \]" "$OUT/gpu_tests.log" && status=1
fi
if [ "$mode" = grads ]; then
  # The backward pass only: gradient tests, every example's gradient check,
  # and the backward benchmark of the head-partitioned configuration.
  for i in 0 1 2 3 4 5 6 7; do
    GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i build/tests/gpu/dattn_gpu_tests \
      --gtest_filter='*Gradients*:GpuBackward*' > "$OUT/grad_tests.$i.log" 2>&1 &
  done
  wait
  cat "$OUT"/grad_tests.*.log > "$OUT/grad_tests.log"
  grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$OUT/grad_tests.log" | sort | uniq -c
  grep -E "^\[  FAILED  \]" "$OUT/grad_tests.log" | sort -u | head -40
  grep -q "^\[  FAILED  \]" "$OUT/grad_tests.log" && status=1
  build/bin/dattn-bench --root . --iters 10 --only longnet_head_partitioned --backward 2>&1 |
    tee "$OUT/bench_backward.log"
fi
if [ "$mode" = all ] || [ "$mode" = examples ]; then
  for f in examples/*.dattn; do
    for name in $(build/bin/dattn check "$f" | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
      build/bin/dattn run "$f" --name "$name" --seq 4096 --device gpu --check --verbose \
        --iters 5 --backward >> "$OUT/examples.log" 2>&1 || status=1
      build/bin/dattn run "$f" --name "$name" --seq 4096 --device gpu --check \
        --iters 5 --backward --deterministic >> "$OUT/examples.log" 2>&1 || status=1
      for mode in "" --deterministic; do
        echo "$name N=16384 $mode: $(build/bin/dattn run "$f" --name "$name" --seq 16384 \
          --device gpu --iters 10 --backward $mode 2>&1 | grep -E '^backward|rror')"
      done >> "$OUT/examples_backward.log"
    done
  done
  grep -E "^attention|^check|^gradient check|^determ|^device|^compile" "$OUT/examples.log"
  cat "$OUT/examples_backward.log"
fi
if [ "$mode" = all ] || [ "$mode" = tiles ]; then
  # Tile sizes for the head-partitioned benchmark at 64K (the autotuner's job,
  # done by hand until it exists).
  for t in "128 64" "128 32" "64 64" "64 32" "256 64"; do
    set -- $t
    echo "tiles $1 x $2: $(build/bin/dattn run examples/longnet_head_partitioned.dattn \
      --seq 65536 --device gpu --iters 20 --tile-m $1 --tile-n $2 2>&1 | grep -E 'TFLOP|error')"
  done | tee "$OUT/tiles.log"
fi
if [ "$mode" = all ] || [ "$mode" = bench ]; then
  build/bin/dattn-bench --root . --iters 20 2>&1 | tee "$OUT/bench.log"
fi
exit $status
