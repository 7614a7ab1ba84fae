#!/usr/bin/env bash
# On the GPU machine (binaries built here and carried): GPU tests, every
# example through `dattn run --device gpu --check`, sanitizers, benchmarks.
# Logs go to $OUT (the device tool returns them); a summary is printed last.
# Exit status: non-zero if any test shard, example or sanitizer run failed
# (124: it stopped itself at DATTN_CHECK_LIMIT seconds, logs packed),
# including one that crashed or was killed.
#
#   [DATTN_FILTER=gtest-filter (tests)] scripts/device_check.sh [MODE...]
#   MODE: all (tests sanitize examples package bench ring python) or any of
#   those, ringtable, abring, nccl, tune, compare, abexamples, split, families, bwdfamilies,
#   patterns, wgmma, tf32, tma, profile, tunecheck, abbackward.
#   abbackward: forward+backward (normal and deterministic) of
#   DATTN_AB_CONFIG (default longnet_head_partitioned) at 16K and 64K
#   through dattn-bench, build/bin's and each DATTN_AB_DIRS folder's,
#   alternating, DATTN_COMPARE_ROUNDS rounds: backward-only changes.
#   tunecheck: the shipped tuning database against the heuristic, ABBA.
#   profile: Nsight Compute's time and throughputs per kernel of sparse
#   examples at 16K (DATTN_PROFILE_EXAMPLES); with DATTN_PROFILE_STALLS=1
#   also the branch kernels' warp stall reasons.
#   tma: the TMA forward and the warp-specialized dK/dV kernel (sm_90a's
#   defaults) against the cp.async wgmma kernels they replaced: their GPU
#   tests, then dattn-bench both ways, alternating, two rounds.
#   bwdfamilies: forward+backward speed with the default dK/dV kernel and
#   with DATTN_BWD_FAMILY (default sm80_mma_backward_dkv, the one the wgmma
#   kernel replaced on the H100; sm90_wgmma_ws_backward_dkv for the
#   warp-specialized one) named.
#   patterns: the sparse examples at 16K with the default kernels and with
#   each forward family named (what KernelFamily::byDefault rests on).
#   split: the GPU tests, examples and causal_ring's speed with
#   DATTN_SPLIT_UNIONS=0 (a union's dilated member kept in the union; the
#   default splits it into its own branch).
#   families: the GPU tests again with each family of DATTN_SUITE_FAMILIES
#   (default: sm80_mma_forward sm90_wgmma_pipelined_forward
#   sm90_wgmma_forward sm80_mma_backward_dkv sm90_wgmma_backward_dkv: the
#   H100's and H200's non-default families) preferred through DATTN_FAMILIES.
#   wgmma: the sm90 wgmma forward families (the TMA one included) against
#   the sm80 forward (their test, then dattn-bench with each, alternating);
#   with DATTN_WGMMA_NCU=1 an Nsight Compute summary of one kernel of each.
#   tf32: fp32 LongNet and the masked example at 16K, precision tf32 against
#   ieee, forward and backward (issue 11's 4x), and a --check at 4K.
#   Logs end up in $OUT/logs.tgz.
#   python: the pytest suite with the torch ops on the GPU. The device's Python
#   is 3.12: build the (abi3) extension for it here and carry build-py312/python:
#     cmake -S . -B build-py312 -G Ninja -DCMAKE_BUILD_TYPE=Release \
#       -DPython3_EXECUTABLE=<a python3.12 with nanobind> && ninja -C build-py312 _dattn
#   compare: build-baseline/dattn-bench (the code before a change) and
#   build/bin/dattn-bench in alternating runs, forward and backward.
#   abexamples: the sparse examples at 16K through `dattn run --backward`
#   with build/bin/dattn and each DATTN_AB_DIRS folder's dattn, alternating.
#   The call's limit is the session's device time left when that is less
#   than 600 s (the reply's limit_s): set DATTN_CHECK_LIMIT below it, and
#   run this script unpiped, so that its lines arrive as they are printed.
set -uo pipefail
cd "$(dirname "$0")/.."
# The device tool kills a call at its limit (600 s, or less when the
# session's device time is short) without a word: stop first, at
# DATTN_CHECK_LIMIT seconds (default 570), so that the TERM trap below
# packs the logs and the summary is printed.
if [ -z "${DATTN_CHECK_TIMED:-}" ]; then
  export DATTN_CHECK_TIMED=1
  exec timeout -s TERM "${DATTN_CHECK_LIMIT:-570}" "$(pwd)/scripts/device_check.sh" "$@"
fi
OUT=${OUT:-/tmp/dattn-out}
mkdir -p "$OUT"
export DATTN_CACHE_DIR=${DATTN_CACHE_DIR:-/tmp/dattn-cache}
# Kernels compiled here without a GPU (scripts/warm_cache.sh), carried along:
# the examples and benchmarks then load instead of compiling.
for warm in build/kernel-cache-*.tgz; do
  [ -e "$warm" ] && mkdir -p "$DATTN_CACHE_DIR" && tar xzf "$warm" -C "$DATTN_CACHE_DIR" &&
    echo "kernel cache: unpacked $warm into $DATTN_CACHE_DIR"
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
build/bin/dattn info | tee -a "$OUT/gpu.txt"
# Several modes may be given (device_check.sh tests ring python); they run
# in this script's order.
modes=" ${*:-all} "
want() { [[ "$modes" == *" $1 "* ]]; }  # a mode that `all` leaves out
wantAll() { want all || want "$1"; }
status=0
summary=()
# Logs into one archive (the device tool returns a limited number of files);
# also when the call's time limit stops the script, so what ran is kept.
pack_logs() {
  (cd "$OUT" && shopt -s nullglob && logs=(./*.log ./*.log.*) && [ ${#logs[@]} -gt 0 ] &&
    tar czf "logs$(date +%H%M%S).tgz" "${logs[@]}" && rm -f "${logs[@]}")
}
print_summary() {
  echo "=== summary ==="
  for line in "${summary[@]}"; do echo "$line"; done
}
trap 'echo "stopped at the time limit: packing the logs"; pack_logs; print_summary; exit 124' TERM INT

# An example as the modes name it, FILE or FILE:NAME (one attention of a
# file): sets file (examples/$file.dattn) and named (--name NAME, or none).
example_args() {
  file=${1%%:*} named=()
  [ "$file" = "$1" ] || named=(--name "${1#*:}")
}

# Runs the GPU tests matching $2 in 8 parallel shards (NVRTC compiles
# dominate; the machine has 16 cores) into $OUT/$1.*.log. Every shard's
# exit status counts: a shard that crashes fails even with no FAILED line.
run_shards() {
  local name=$1 filter=$2 pids=() i rc failed=0
  for i in 0 1 2 3 4 5 6 7; do
    GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i build/tests/gpu/dattn_gpu_tests \
      --gtest_filter="$filter" > "$OUT/$name.$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2 3 4 5 6 7; do
    wait "${pids[$i]}"
    rc=$?
    if [ $rc -ne 0 ]; then
      echo "$name shard $i exited with status $rc"
      failed=1
    fi
  done
  cat "$OUT/$name".*.log > "$OUT/$name.log"
  grep -hE "^\[  (PASSED|FAILED|SKIPPED) " "$OUT/$name".*.log | sort | uniq -c
  grep -hE "^\[  FAILED  \]" "$OUT/$name".*.log | sort -u | head -40
  local passed
  passed=$(cat "$OUT/$name".*.log | grep -cE "^\[       OK \]")
  summary+=("$name: $passed tests passed, shards $([ $failed = 0 ] && echo ok || echo FAILED)")
  [ $failed = 0 ] || status=1
}

if wantAll tests; then
  run_shards gpu_tests "${DATTN_FILTER:-*}"
fi
if wantAll sanitize; then
  # memcheck and racecheck on a subset that covers every kernel kind:
  # forward and backward of each family, strided views, streams, graphs.
  subset='AllPatterns/Patterns.MatchReference/multi_branch_bf16*:AllPatterns/Patterns.MatchReference/window_global_fp32*:AllPatterns/Gradients.MatchReference/head_partitioned_fp16:AllPatterns/Gradients.MatchReference/random_bf16_causal:AllPatterns/Gradients.MatchReference/dilated_fp32:GpuLayouts.*:GpuConcurrency.TwoStreams*:GpuConcurrency.Captured*'
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 99 --print-limit 20 \
      build/tests/gpu/dattn_gpu_tests --gtest_filter="$subset" > "$OUT/sanitize_$tool.log" 2>&1
    rc=$?
    tail -3 "$OUT/sanitize_$tool.log"
    summary+=("compute-sanitizer $tool: exit $rc, $(grep -cE '^\[       OK \]' "$OUT/sanitize_$tool.log") tests ok, $(grep -E '(ERROR|RACECHECK) SUMMARY' "$OUT/sanitize_$tool.log" | tail -1)")
    [ $rc -eq 0 ] || status=1
  done
fi
if wantAll examples; then
  ex_fail=0
  for f in examples/*.dattn; do
    for name in $(build/bin/dattn check "$f" | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
      for det in "" --deterministic; do
        build/bin/dattn run "$f" --name "$name" --seq 4096 --device gpu --check --verbose \
          --iters 5 --backward $det >> "$OUT/examples.log" 2>&1 || { ex_fail=1; echo "FAILED: $name $det"; }
      done
    done
  done
  grep -E "^attention|^check|^gradient check|^determ" "$OUT/examples.log"
  summary+=("examples: $([ $ex_fail = 0 ] && echo all passed || echo FAILED)")
  [ $ex_fail = 0 ] || status=1
fi
if wantAll package; then
  # examples/cpp built against the installed package (ctest's cpp_package
  # built it here; carry build/install and build/example).
  lib=build/install/lib
  [ -e $lib/libdattn.so.0 ] || ln -sf "$(basename $lib/libdattn.so.0.*)" $lib/libdattn.so.0
  pk_fail=0
  for spec in examples/longnet_head_partitioned.dattn examples/causal_ring.dattn; do
    LD_LIBRARY_PATH=$lib build/example/dattn_example $spec --seq 2048 >> "$OUT/package.log" 2>&1 ||
      { pk_fail=1; echo "FAILED: dattn_example $spec"; }
  done
  cat "$OUT/package.log"
  summary+=("C++ package example: $([ $pk_fail = 0 ] && echo passed || echo FAILED)")
  [ $pk_fail = 0 ] || status=1
fi
if wantAll bench; then
  build/bin/dattn-bench --root . --iters 20 2>&1 | tee "$OUT/bench.log"
  build/bin/dattn-bench --root . --iters 10 --only longnet_head_partitioned --backward 2>&1 |
    tee "$OUT/bench_backward.log"
fi
if wantAll ring; then
  # The loopback ring: its GPU tests (also in `tests`), then each example as
  # a ring of 1, 2, 4 and 8 ranks on one GPU, forward and backward, checked.
  # One process per example file, in parallel: on a fresh machine NVRTC
  # compiles dominate, and the machine has 16 cores.
  ring_fail=0
  build/tests/gpu/dattn_gpu_tests --gtest_filter='GpuRing*' > "$OUT/ring_tests.log" 2>&1 &
  tests_pid=$!
  ring_example() { # spec file; failures go to $OUT/ring_failures.txt
    local f=$1 log="$OUT/ring_examples.$(basename "$1" .dattn).log" name p
    for name in $(build/bin/dattn check "$f" | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
      for p in 1 2 4 8; do
        build/bin/dattn run "$f" --name "$name" --seq 2048 --device gpu --ranks $p --loopback \
          --backward --check --iters 3 >> "$log" 2>&1 ||
          echo "FAILED: $name ranks $p" >> "$OUT/ring_failures.txt"
      done
    done
  }
  rm -f "$OUT/ring_failures.txt"
  pids=()
  for f in examples/*.dattn; do
    ring_example "$f" &
    pids+=($!)
  done
  wait "${pids[@]}"
  wait $tests_pid || { ring_fail=1; echo "FAILED: GpuRing tests"; }
  tail -3 "$OUT/ring_tests.log"
  cat "$OUT"/ring_examples.*.log > "$OUT/ring_examples.log"
  if [ -s "$OUT/ring_failures.txt" ]; then
    ring_fail=1
    cat "$OUT/ring_failures.txt"
  fi
  echo "ring examples: $(grep -c '^gradient check: PASS' "$OUT/ring_examples.log") passed forward and backward"
  grep -E "^ring of|^moved|^memory|^check|^gradient check|^backward" "$OUT/ring_examples.log" | head -80
  # causal_ring at 16K: one GPU, then its ring of 1 and 4 ranks on it (the
  # ring's block kernels against the one-GPU ones).
  for ranks in 0 1 4; do
    args=(--device gpu --iters 5 --backward)
    [ $ranks = 0 ] || args+=(--ranks $ranks --loopback)
    timeout 120 build/bin/dattn run examples/causal_ring.dattn --seq 16384 "${args[@]}" 2>&1 |
      grep -E "^ring of|^backward|ms" | sed "s/^/causal_ring 16K, ranks $ranks: /" |
      tee -a "$OUT/ring_timing.log"
  done
  summary+=("ring (loopback): $([ $ring_fail = 0 ] && echo all passed || echo FAILED)")
  [ $ring_fail = 0 ] || status=1
fi
# ringtable_lines DATTN [TAG]: one line per spec of DATTN_RINGTABLE_SPECS, the
# ring's time and memory against one GPU with that dattn binary (below).
ringtable_lines() {
  local bin=$1 tag=${2:-} seq=${DATTN_RING_SEQ:-8192} f p
  local specs=${DATTN_RINGTABLE_SPECS:-examples/dense_ring.dattn examples/longnet_head_partitioned.dattn
    examples/longnet_whole_sequence.dattn examples/longnet_paper.dattn examples/causal_ring.dattn}
  # One spec at a time: the ranks' times are sums over one GPU, and two
  # processes on it would time each other.
  for f in $specs; do
    local log="$OUT/ringtable$tag.$(basename $f .dattn).log"
    "$bin" run $f --seq $seq --device gpu --iters 5 --backward > "$log" 2>&1
    local t1=$(grep -oE '[0-9.]+ ms \(median' "$log" | head -1 | cut -d' ' -f1)
    local b1=$(grep -oE '^backward: [0-9.]+ ms' "$log" | grep -oE '[0-9.]+')
    local line="$(basename $f .dattn)$tag one gpu: $t1 ms, backward $b1 ms"
    for p in ${DATTN_RINGTABLE_RANKS:-1 2 4 8}; do
      "$bin" run $f --seq $seq --device gpu --ranks $p --loopback --iters 5 --backward \
        > "$log.$p" 2>&1 || line="$line | P=$p FAILED"
      line="$line | P=$p $(grep -oE '[0-9.]+ ms \(median' "$log.$p" | head -1 | cut -d' ' -f1-2)"
      line="$line bwd $(grep -oE '^backward: [0-9.]+ ms' "$log.$p" | grep -oE '[0-9.]+ ms')"
      line="$line mem $(grep -oE '^memory per rank: [0-9.]+ MiB' "$log.$p" | grep -oE '[0-9.]+ MiB')"
      line="$line bound $(grep -oE '[0-9.]+x \((within|above)\)' "$log.$p")"
      # The slowest rank's own time (forward, backward): about the ring's
      # time on P GPUs with hidden transfers; efficiency T1 / (P x that).
      local hidden=($(grep -oE 'transfers hidden, about [0-9.]+ ms' "$log.$p" | grep -oE '[0-9.]+'))
      [ ${#hidden[@]} = 2 ] && line="$line projected on $p GPUs $(awk -v t=$t1 -v b=$b1 \
        -v f=${hidden[0]} -v g=${hidden[1]} -v p=$p 'BEGIN { printf "%.3f / %.3f ms, efficiency %.2f / %.2f", f, g, t / (p * f), b / (p * g) }')"
    done
    echo "$line" | tee -a "$OUT/ringtable.txt"
  done
}
if want ringtable; then
  # Time and memory per rank of the loopback ring at N = ${DATTN_RING_SEQ:-8192}, P = 1..8,
  # forward and backward, against the one-GPU run (ranks run one after another
  # on the one GPU: the time is the sum over ranks), and issue 9's memory
  # bound (`dattn run`'s "memory bound" line: the worst rank against one
  # GPU's memory / P + its receive buffers); DATTN_RINGTABLE_RANKS (default
  # "1 2 4 8") the ring sizes. Issue 9's dense check:
  # DATTN_RING_SEQ=131072 DATTN_RINGTABLE_SPECS="bench/dense.dattn
  # examples/dense_ring.dattn" scripts/device_check.sh ringtable
  ringtable_lines build/bin/dattn
fi
if want abring; then
  # The ring with other binaries (a branch's): for build/bin and each
  # DATTN_AB_DIRS folder (holding dattn and dattn_gpu_tests), the GpuRing
  # tests in 6 shards, then the ringtable lines (DATTN_RINGTABLE_* as
  # above) with that folder's dattn, so that speed and memory compare on
  # the same GPU. E.g. DATTN_AB_DIRS=build-combo DATTN_RING_SEQ=131072
  # DATTN_RINGTABLE_SPECS=bench/dense.dattn DATTN_RINGTABLE_RANKS="1 2".
  for dir in build/bin ${DATTN_AB_DIRS:-build-baseline}; do
    tests=$dir/dattn_gpu_tests tag=".$(basename $dir)"
    [ $dir = build/bin ] && tests=build/tests/gpu/dattn_gpu_tests tag=.main
    pids=() failed=0
    for i in 0 1 2 3 4 5; do
      GTEST_TOTAL_SHARDS=6 GTEST_SHARD_INDEX=$i "$tests" --gtest_filter='GpuRing*' \
        > "$OUT/abring$tag.$i.log" 2>&1 &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait $pid || failed=1; done
    grep -hE "^\[  FAILED  \]" "$OUT/abring$tag".*.log | sort -u | head -20
    summary+=("GpuRing tests$tag: $(cat "$OUT/abring$tag".*.log | grep -cE '^\[       OK \]') passed, shards $([ $failed = 0 ] && echo ok || echo FAILED)")
    [ $failed = 0 ] || status=1
    ringtable_lines "$dir/dattn" "$tag"
  done
  summary+=("$(cat "$OUT/ringtable.txt")")
fi
if wantAll python; then
  if ls build-py312/python/dattn/_dattn.* > /dev/null 2>&1; then
    PYTHONPATH=build-py312/python timeout 400 python3 -m pytest -q -rs -p no:cacheprovider tests/python \
      > "$OUT/python.log" 2>&1
    rc=$?
  else
    echo "FAILED: no build-py312/python/dattn/_dattn.* (build it and carry it: see the top)" |
      tee "$OUT/python.log"
    rc=1
  fi
  tail -15 "$OUT/python.log"
  summary+=("python (torch ops): exit $rc, $(tail -1 "$OUT/python.log")")
  [ $rc -eq 0 ] || status=1
  # The training example, a few steps on one GPU.
  PYTHONPATH=build-py312/python python3 examples/python/train_longnet.py --seq 8192 --steps 4 \
    > "$OUT/train_example.log" 2>&1
  rc=$?
  tail -4 "$OUT/train_example.log"
  summary+=("python training example: exit $rc")
  [ $rc -eq 0 ] || status=1
  # The op's per-call overhead, then dattn against the PyTorch composite.
  PYTHONPATH=build-py312/python python3 -m dattn.bench --overhead 2>&1 | tee "$OUT/overhead.log"
  PYTHONPATH=build-py312/python python3 -m dattn.bench --seq ${DATTN_BENCH_SEQ:-16384,65536} \
    --backward --png "$OUT/bench.png" 2>&1 | tee "$OUT/python_bench.log"
fi
if want nccl; then
  # Parts (DATTN_NCCL_PARTS, default all): tests examples faults perf.
  # The ring has P = DATTN_NCCL_RANKS ranks (default: every GPU), one a
  # GPU: two on nvidia-h200-x2, 4 or 8 for issue 10's scaling runs.
  parts=" ${DATTN_NCCL_PARTS:-tests examples faults perf} "
  part() { [[ "$parts" == *" $1 "* ]]; }
  export NCCL_NVLS_ENABLE=0 DATTN_RING_TIMEOUT=${DATTN_RING_TIMEOUT:-30}
  P=${DATTN_NCCL_RANKS:-$(nvidia-smi -L | grep -c '^GPU')}
  nccl_fail=0
  if [ "$P" -lt 2 ]; then
    echo "FAILED: the nccl mode needs two GPUs or more, this machine has $P"
    parts=" " nccl_fail=1
  fi
  if part tests; then
    timeout 300 build/tests/gpu/dattn_gpu_tests --gtest_filter='GpuNcclRing*' \
      > "$OUT/nccl_tests.log" 2>&1 || { nccl_fail=1; echo "FAILED: GpuNcclRing tests"; }
    tail -3 "$OUT/nccl_tests.log"
  fi
  # The environment of rank $1 of a P-process ring, as torchrun would set it.
  rankEnv() { echo RANK=$1 WORLD_SIZE=$P LOCAL_RANK=$1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$2; }
  # Runs every rank as a process (each under a time limit, so a hang fails
  # instead of eating the call); $1 names the logs (nccl_$1R.log for rank
  # R), the rest are dattn run's arguments. Sets rcs to the exit statuses
  # (rank 0 first) and ranks_ok to 1 if all are 0.
  allRanks() {
    local name=$1 r pids=()
    shift
    port=$((port + 2))
    for r in $(seq 0 $((P - 1))); do
      env $(rankEnv $r $port) timeout 240 build/bin/dattn run "$@" --device gpu --ranks $P \
        > "$OUT/nccl_${name}$r.log" 2>&1 &
      pids+=($!)
    done
    rcs="" ranks_ok=1
    for r in $(seq 0 $((P - 1))); do
      wait ${pids[$r]}
      local rc=$?
      rcs="$rcs $rc"
      [ $rc = 0 ] || ranks_ok=0
    done
  }
  # The logs of every rank of an allRanks run named $1.
  rankLogs() { local r; for r in $(seq 0 $((P - 1))); do echo "$OUT/nccl_$1$r.log"; done; }
  # The bytes on the wire against plan-ring's: the `moved` figures of the
  # logs given (every process of one ring run, one run each) add up to the
  # plan's totals times the batch, forward and backward.
  movedMatches() {
    awk '
      function planned(line,  a) {
        match(line, /plan-ring: [0-9]+ x batch [0-9]+/)
        split(substr(line, RSTART, RLENGTH), a, " ")
        return a[2] * a[5]
      }
      /^moved: / { fwd += $2; fwdPlan = planned($0) }
      /^backward: .*moved [0-9]+ bytes/ {
        match($0, /moved [0-9]+ bytes/); split(substr($0, RSTART, RLENGTH), b, " ")
        bwd += b[2]; bwdPlan = planned($0)
      }
      END {
        ok = fwdPlan != "" && fwd == fwdPlan && bwd == bwdPlan
        printf "%s forward %.0f of %.0f, backward %.0f of %.0f bytes\n",
               ok ? "bytes as planned:" : "BYTES NOT AS PLANNED:", fwd, fwdPlan, bwd, bwdPlan
        exit !ok
      }' "$@"
  }
  port=29400
  if part examples; then
    for f in examples/*.dattn; do
      for name in $(build/bin/dattn check "$f" | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
        timeout 240 build/bin/dattn run "$f" --name "$name" --seq 4096 --device gpu --ranks $P \
          --backward --check --iters 3 > "$OUT/nccl_run.log" 2>&1 ||
          { nccl_fail=1; echo "FAILED (one process): $name"; }
        cat "$OUT/nccl_run.log" >> "$OUT/nccl_one_process.log"
        echo "$name, one process: $(movedMatches "$OUT/nccl_run.log")" | tee -a "$OUT/nccl_bytes.log"
        allRanks "rank_${name}_" "$f" --name "$name" --seq 4096 --backward --check --iters 3
        [ $ranks_ok = 1 ] || { nccl_fail=1; echo "FAILED ($P processes): $name:$rcs"; }
        echo "$name, $P processes: $(movedMatches $(rankLogs "rank_${name}_"))" |
          tee -a "$OUT/nccl_bytes.log"
      done
    done
    grep -hE "^ring of|^moved|^memory|^check|^gradient check|^backward" \
      "$OUT"/nccl_one_process.log | head -40
    # N = 3000: shards (and zigzag chunks) that are not whole tiles, where
    # tests/python/test_distributed.py failed on two H200s while every
    # example passed at 4096; the same through the CLI says whether the
    # fault is ragged N or the Python path.
    for f in ${DATTN_NCCL_RAGGED:-dense_ring:dense_causal_ring longnet_whole_sequence causal_ring}; do
      example_args "$f"
      timeout 240 build/bin/dattn run "examples/$file.dattn" "${named[@]}" --seq 3000 --device gpu \
        --ranks $P --backward --check --iters 3 > "$OUT/nccl_run.log" 2>&1 ||
        { nccl_fail=1; echo "FAILED (one process, N = 3000): $f"; }
      cat "$OUT/nccl_run.log" >> "$OUT/nccl_ragged.log"
      echo "$f at 3000, one process: $(movedMatches "$OUT/nccl_run.log")" |
        tee -a "$OUT/nccl_bytes.log"
      allRanks "ragged_${f//:/_}_" "examples/$file.dattn" "${named[@]}" --seq 3000 --backward \
        --check --iters 3
      [ $ranks_ok = 1 ] || { nccl_fail=1; echo "FAILED ($P processes, N = 3000): $f:$rcs"; }
      echo "$f at 3000, $P processes: $(movedMatches $(rankLogs "ragged_${f//:/_}_"))" |
        tee -a "$OUT/nccl_bytes.log"
    done
    grep -q "NOT AS PLANNED" "$OUT/nccl_bytes.log" && nccl_fail=1
  fi
  if part faults; then
    # Mismatched plans: the last rank was given another sequence length;
    # every rank must fail saying the ranks disagree.
    port=$((port + 2))
    pids=()
    for r in $(seq 0 $((P - 1))); do
      seq=4096
      [ $r = $((P - 1)) ] && seq=8192
      env $(rankEnv $r $port) timeout 120 build/bin/dattn run examples/dense_ring.dattn \
        --seq $seq --device gpu --ranks $P > "$OUT/nccl_mismatch$r.log" 2>&1 &
      pids+=($!)
    done
    for r in $(seq 0 $((P - 1))); do
      wait ${pids[$r]}
      rc=$?
      if [ $rc = 0 ] || ! grep -q disagree "$OUT/nccl_mismatch$r.log"; then
        nccl_fail=1
        echo "FAILED: mismatched plans, rank $r exited with $rc"
      fi
    done
    tail -1 "$OUT/nccl_mismatch0.log"
    # A killed peer: the last rank dies mid-run; every other rank must fail
    # within the timeout. Each rank is started as a plain command, so $! is
    # the dattn process itself (a function run in the background would be a
    # subshell, and killing it would leave dattn running).
    port=$((port + 2))
    pids=()
    for r in $(seq 0 $((P - 1))); do
      env $(rankEnv $r $port) build/bin/dattn run examples/dense_ring.dattn --seq 65536 \
        --device gpu --ranks $P --iters 100000 > "$OUT/nccl_killed$r.log" 2>&1 &
      pids+=($!)
    done
    sleep 40
    kill -9 ${pids[$((P - 1))]}
    t0=$(date +%s)
    # The survivors get the ring's timeout and 60 s more, then are killed.
    ( sleep $((DATTN_RING_TIMEOUT + 60)); kill -9 "${pids[@]}" 2> /dev/null ) &
    watchdog=$!
    for r in $(seq 0 $((P - 2))); do
      wait ${pids[$r]}
      rc=$?
      t1=$(date +%s)
      echo "killed peer: rank $r exited with $rc after $((t1 - t0)) s (timeout $DATTN_RING_TIMEOUT s)"
      if [ $rc = 0 ] || [ $rc = 137 ] || [ $((t1 - t0)) -gt $((DATTN_RING_TIMEOUT + 30)) ]; then
        nccl_fail=1
        echo "FAILED: killed peer (rank $r)"
      fi
    done
    kill $watchdog 2> /dev/null
    tail -2 "$OUT/nccl_killed0.log"
  fi
  if part perf; then
    # Efficiency T1 / (P T_P): dense and dense causal at DATTN_NCCL_SEQ
    # (default 128K on two GPUs, issue 10's 256K on four and 512K on
    # eight), the whole-sequence LongNet at DATTN_NCCL_LONGNET_SEQ (1M; 2M
    # on eight), each one GPU, then one process per rank, with the bytes
    # moved and the memory a rank holds.
    dseq=${DATTN_NCCL_SEQ:-$((65536 * P))}
    lseq=${DATTN_NCCL_LONGNET_SEQ:-$([ $P -ge 8 ] && echo 2097152 || echo 1048576)}
    for run in "bench/dense.dattn $dseq" "examples/dense_ring.dattn $dseq" \
        "examples/longnet_whole_sequence.dattn $lseq"; do
      read -r spec n <<< "$run"
      name="perf_$(basename "$spec" .dattn)_"
      timeout 300 build/bin/dattn run "$spec" --seq "$n" --device gpu --iters 10 --backward 2>&1 |
        grep -E "^gpu|^backward|time" | sed "s|^|one gpu  $spec N = $n: |" |
        tee -a "$OUT/nccl_efficiency.log"
      allRanks "$name" "$spec" --seq "$n" --iters 10 --backward
      [ $ranks_ok = 1 ] || { nccl_fail=1; echo "FAILED ($P processes): $spec at $n:$rcs"; }
      grep -hE "^ring of|^backward|^moved|^memory" $(rankLogs "$name") |
        sed "s|^|$P ranks  $spec N = $n: |" | tee -a "$OUT/nccl_efficiency.log"
      echo "$spec at $n: $(movedMatches $(rankLogs "$name"))" | tee -a "$OUT/nccl_efficiency.log"
    done
    # PyTorch's context parallelism on the dense shapes, same run (the
    # baseline of T1 / (P TP)); then the Python ring's training step under
    # torchrun.
    for causal in "" --causal; do
      timeout 300 python3 -m torch.distributed.run --nproc-per-node $P \
        bench/torch_context_parallel.py --seq $dseq $causal 2>&1 |
        grep -E "^#|^torch context|Error" | tee -a "$OUT/nccl_efficiency.log"
    done
    PYTHONPATH=build-py312/python timeout 200 python3 -m torch.distributed.run \
      --nproc-per-node $P examples/python/train_longnet.py --ring --seq 16384 --steps 4 \
      > "$OUT/nccl_train.log" 2>&1 || { nccl_fail=1; echo "FAILED: the torchrun training example"; }
    tail -3 "$OUT/nccl_train.log"
  fi
  summary+=("nccl ring ($parts): $([ $nccl_fail = 0 ] && echo all passed || echo FAILED)")
  [ $nccl_fail = 0 ] || status=1
fi
if want tune; then
  # This GPU's shipped database (autotune/db/<gpu>.json): the benchmark
  # configurations at dattn-bench's lengths and every other example at 16K,
  # forward and backward, within DATTN_TUNE_BUDGET seconds in all; with
  # DATTN_TUNE_COMPARE=1 then the same configurations with and without it
  # (tunecheck does that fairly, once the database is committed). With
  # DATTN_TUNE_RESUME=FILE (e.g. a partial autotune/db/h200.json) the run
  # starts from FILE's entries and measures only the kernels they do not
  # cover (dattn tune --resume): a database made over several short calls,
  # or, after a change to the backward's templates only, the shipped
  # database's backward entries measured again (its forward ones stay).
  db="$OUT/tuning.json"
  resume=()
  if [ -n "${DATTN_TUNE_RESUME:-}" ]; then
    cp "$DATTN_TUNE_RESUME" "$db" && resume=(--resume) &&
      echo "tune: resuming from $DATTN_TUNE_RESUME" | tee -a "$OUT/tune.log"
  fi
  deadline=$(( $(date +%s) + ${DATTN_TUNE_BUDGET:-330} ))
  tune_rc=0
  tune_one() { # lengths, spec files
    local left=$(( deadline - $(date +%s) )) seq=$1
    shift
    if [ $left -lt 10 ]; then echo "tune: no budget left for $*" | tee -a "$OUT/tune.log"; return; fi
    build/bin/dattn tune "$@" --seq "$seq" --backward --budget $left --out "$db" "${resume[@]}" \
      2>> "$OUT/tune_progress.log" | tee -a "$OUT/tune.log"
    [ "${PIPESTATUS[0]}" = 0 ] || tune_rc=1
  }
  tune_one 16384,65536,262144 examples/longnet_head_partitioned.dattn
  tune_one 32768,131072 examples/longnet_paper.dattn
  examples16k="window_global_random_gqa causal_ring block_patterns dense_ring longnet_whole_sequence"
  tune_one 16384 bench/dense.dattn $(for f in $examples16k; do echo examples/$f.dattn; done)
  echo "tune: $(( ${DATTN_TUNE_BUDGET:-330} - deadline + $(date +%s) )) s" | tee -a "$OUT/tune.log"
  # The comparison below runs the two one after the other, which a GPU that
  # slows over the call biases against the second: only with
  # DATTN_TUNE_COMPARE=1; tunecheck compares the committed database ABBA.
  compare_whos=""
  [ "${DATTN_TUNE_COMPARE:-0}" = 1 ] && compare_whos="heuristic tuned"
  for who in $compare_whos; do
    [ $who = tuned ] && export DATTN_TUNING_DB="$db" || export DATTN_TUNING_DB="$OUT/none.json"
    build/bin/dattn-bench --root . --iters 20 2>&1 | grep -vE "^#|^GPU|^config" |
      sed "s/^/$who: /" | tee -a "$OUT/tune_bench.log"
    build/bin/dattn-bench --root . --iters 10 --only longnet_head_partitioned --seq 65536 \
      --backward 2>&1 | grep forward+backward | sed "s/^/$who: /" | tee -a "$OUT/tune_bench.log"
    for f in $examples16k; do
      timeout 100 build/bin/dattn run examples/$f.dattn --seq 16384 --device gpu --iters 10 \
        --backward 2>&1 | grep -E "^attention|^device|^backward" | tr '\n' ' ' |
        sed "s/^/$who: /; s/$/\n/" | tee -a "$OUT/tune_bench.log"
    done
  done
  unset DATTN_TUNING_DB
  summary+=("tune: exit $tune_rc, $(grep -c . "$db" 2> /dev/null) lines in $db")
  [ $tune_rc -eq 0 ] || status=1
fi
if want tunecheck; then
  # The shipped database (autotune/db) against the heuristic (an empty
  # shipped folder, no user database), in ABBA order so that a drift of the
  # GPU's speed over the run (warm-up, heat) falls on both alike: the
  # benchmark configurations, LongNet's forward+backward at 64K and the
  # examples at 16K.
  mkdir -p "$OUT/no-db"
  for who in heuristic shipped shipped heuristic; do
    if [ $who = heuristic ]; then
      export DATTN_TUNING_SHIPPED="$OUT/no-db" DATTN_TUNING_DB="$OUT/no-db/none.json"
    else
      unset DATTN_TUNING_SHIPPED
      export DATTN_TUNING_DB="$OUT/no-db/none.json"
    fi
    build/bin/dattn-bench --root . --iters 20 2>&1 | grep -vE "^#|^GPU|^config" |
      sed "s/^/$who: /" | tee -a "$OUT/tunecheck.log"
    build/bin/dattn-bench --root . --iters 10 --only longnet_head_partitioned --seq 65536 \
      --backward 2>&1 | grep forward+backward | sed "s/^/$who: /" | tee -a "$OUT/tunecheck.log"
    for f in window_global_random_gqa causal_ring block_patterns:multiscale dense_ring; do
      example_args "$f"
      timeout 100 build/bin/dattn run "examples/$file.dattn" "${named[@]}" --seq 16384 \
        --device gpu --iters 10 --backward 2>&1 | grep -E "^attention|^device|^backward" |
        tr '\n' ' ' | sed "s/^/$who: /; s/$/\n/" | tee -a "$OUT/tunecheck.log"
    done
  done
  unset DATTN_TUNING_SHIPPED DATTN_TUNING_DB
  summary+=("tunecheck: $(grep -c . "$OUT/tunecheck.log") lines in tunecheck.log")
fi
if want compare; then
  # Before/after in alternating runs on the same machine: forward of every
  # configuration, backward of the head-partitioned one (DATTN_COMPARE_ROUNDS
  # rounds, default 2). With
  # DATTN_COMPARE_FAMILIES, a third contender: build/bin/dattn-bench with
  # those families preferred (DATTN_FAMILIES). With DATTN_COMPARE_ENV (e.g.
  # DATTN_BRANCH_STREAMS=0), another: build/bin/dattn-bench with that
  # environment.
  for round in $(seq "${DATTN_COMPARE_ROUNDS:-2}"); do
    for who in build-baseline/dattn-bench build/bin/dattn-bench ${DATTN_COMPARE_FAMILIES:+families} \
      ${DATTN_COMPARE_ENV:+knob}; do
      bench=$who
      [ "$who" = families ] && bench="env DATTN_FAMILIES=$DATTN_COMPARE_FAMILIES build/bin/dattn-bench"
      [ "$who" = knob ] && bench="env $DATTN_COMPARE_ENV build/bin/dattn-bench"
      echo "## $bench, round $round" | tee -a "$OUT/compare.log"
      $bench --root . --iters 20 2>&1 | grep -vE "^#" | tee -a "$OUT/compare.log"
      $bench --root . --iters 10 --only longnet_head_partitioned --seq 65536 --backward 2>&1 |
        grep forward+backward | tee -a "$OUT/compare.log"
    done
  done
fi
if want abexamples; then
  # Before/after on the examples dattn-bench leaves out: the sparse ones at
  # 16K, forward and backward (`dattn run`), with build/bin/dattn and the
  # dattn of each folder in DATTN_AB_DIRS (default build-baseline; e.g.
  # "build-prev build-baseline" for three versions; family:NAME is
  # build/bin's dattn with the family NAME named), alternating,
  # DATTN_COMPARE_ROUNDS rounds (default 2). Each result is printed as it
  # comes, so a call stopped early still reports what ran.
  for round in $(seq "${DATTN_COMPARE_ROUNDS:-2}"); do
    for f in ${DATTN_AB_EXAMPLES:-causal_ring window_global_random_gqa block_patterns:multiscale}; do
      for dir in build/bin ${DATTN_AB_DIRS:-build-baseline}; do
        case $dir in # family:NAME: build/bin's dattn with DATTN_FAMILIES=NAME
          family:*) bin=build/bin/dattn families=${dir#family:} ;;
          *) bin=$dir/dattn families=${DATTN_FAMILIES:-} ;;
        esac
        example_args "$f"
        DATTN_FAMILIES=$families timeout 120 "$bin" run "examples/$file.dattn" "${named[@]}" \
          --seq 16384 --device gpu --iters 10 --backward > "$OUT/ab_example.log.tmp" 2>&1
        cat "$OUT/ab_example.log.tmp" >> "$OUT/ab_examples.log"
        echo "ab round $round, $f, $dir: $(grep -oE '[0-9.]+ effective TFLOP/s' \
          "$OUT/ab_example.log.tmp" | sed 's/ effective TFLOP.s//' | paste -sd/) TFLOP/s (forward/forward+backward)" |
          tee -a "$OUT/ab_summary.log"
      done
    done
  done
  rm -f "$OUT/ab_example.log.tmp"
  summary+=("$(cat "$OUT/ab_summary.log")")
fi
if want abbackward; then
  for round in $(seq "${DATTN_COMPARE_ROUNDS:-2}"); do
    for dir in build/bin ${DATTN_AB_DIRS:-build-baseline}; do
      for n in 16384 65536; do
        "$dir/dattn-bench" --root . --iters 10 --only "${DATTN_AB_CONFIG:-longnet_head_partitioned}" \
          --seq $n --backward > "$OUT/abbackward.log.tmp" 2>&1
        cat "$OUT/abbackward.log.tmp" >> "$OUT/abbackward.log"
        echo "abbackward round $round, $dir, N = $n: $(grep forward+backward "$OUT/abbackward.log.tmp" |
          awk '{print $4}' | paste -sd/) TFLOP/s (forward+backward / deterministic)" |
          tee -a "$OUT/abbackward_summary.log"
      done
    done
  done
  rm -f "$OUT/abbackward.log.tmp"
  summary+=("$(cat "$OUT/abbackward_summary.log")")
fi
if want families; then
  # The GPU tests once more per family that is not the default on this GPU,
  # that family preferred (on an H100 or H200: the sm80 forward, the
  # cp.async wgmma forwards, the sm80 and the non-specialized wgmma dK/dV
  # kernels; the defaults ran in `tests`).
  for fam in ${DATTN_SUITE_FAMILIES:-sm80_mma_forward sm90_wgmma_pipelined_forward sm90_wgmma_forward sm80_mma_backward_dkv sm90_wgmma_backward_dkv}; do
    export DATTN_FAMILIES=$fam
    case $fam in
      *backward*) run_shards "suite_$fam" 'AllPatterns/Gradients.*:GpuBackward*:GpuLayouts*' ;;
      *) run_shards "suite_$fam" 'AllPatterns/Patterns.*:GpuForward*:GpuLayouts*:GpuConcurrency*:GpuRing*' ;;
    esac
    unset DATTN_FAMILIES
  done
fi
if want bwdfamilies; then
  # Forward+backward speed with the default dK/dV kernel and with
  # DATTN_BWD_FAMILY (default: the sm80 one) named, alternating, two
  # rounds: dattn-bench's LongNet configurations, causal_ring and dense.
  named=${DATTN_BWD_FAMILY:-sm80_mma_backward_dkv}
  for round in 1 2; do
    for fam in default "$named"; do
      runWith() { if [ "$fam" = default ]; then "$@"; else DATTN_FAMILIES=$fam "$@"; fi; }
      for c in "longnet_head_partitioned 65536" "longnet_paper 32768" "dense 16384"; do
        set -- $c
        line=$(runWith timeout 90 build/bin/dattn-bench --root . --iters 10 --only "$1" --seq "$2" \
          --backward 2>&1 | grep -E 'forward\+backward|rror')
        echo "round $round, $fam: $line" | tee -a "$OUT/bwdfamilies.log"
      done
      line=$(runWith timeout 90 build/bin/dattn run examples/causal_ring.dattn --seq 16384 \
        --device gpu --iters 10 --backward 2>&1 | grep -E '^device|^backward|rror' | tr '\n' ' ')
      echo "round $round, $fam: causal_ring 16384 $line" | tee -a "$OUT/bwdfamilies.log"
    done
    # fp16, where the wgmma dK/dV kernel is not the default: LongNet at 64K.
    sed 's/dtype = bf16/dtype = fp16/' examples/longnet_head_partitioned.dattn > /tmp/dattn-fp16.dattn
    for wgmma in 0 1; do
      line=$( ([ $wgmma = 0 ] || export DATTN_FAMILIES=sm90_wgmma_backward_dkv
        timeout 90 build/bin/dattn run /tmp/dattn-fp16.dattn --seq 65536 --device gpu --iters 10 \
          --backward 2>&1) | grep -E '^device|^backward|rror' | tr '\n' ' ')
      echo "round $round: fp16 longnet 65536, wgmma dK/dV named $wgmma: $line" |
        tee -a "$OUT/bwdfamilies.log"
    done
  done
fi
if want tma; then
  # The TMA forward and the warp-specialized dK/dV kernel (the defaults):
  # their GPU tests and the cp.async kernels' (the dK/dV products are
  # shared) in 8 shards, then dattn-bench with the defaults and with the
  # cp.async kernels named, alternating, two rounds: every forward configuration, and
  # forward+backward of LongNet at 64K and 256K, longnet_paper at 32K and
  # dense at 16K.
  run_shards tma_tests '*Wgmma*:AllPatterns/Gradients*:GpuLayouts*:GpuBackward*'
  for round in 1 2; do
    for who in default cp.async; do
      runWho() { if [ $who = default ]; then "$@"; else
        DATTN_FAMILIES=sm90_wgmma_pipelined_forward,sm90_wgmma_backward_dkv "$@"; fi; }
      runWho timeout 150 build/bin/dattn-bench --root . --iters 20 2>&1 | grep -vE "^#|^GPU|^config" |
        sed "s/^/round $round, $who: /" | tee -a "$OUT/tma.log"
      for c in "longnet_head_partitioned 65536" "longnet_head_partitioned 262144" \
               "longnet_paper 32768" "dense 16384"; do
        set -- $c
        runWho timeout 120 build/bin/dattn-bench --root . --iters 10 --only "$1" --seq "$2" \
          --backward 2>&1 | grep -E 'forward\+backward|rror' | sed "s/^/round $round, $who: /" |
          tee -a "$OUT/tma.log"
      done
    done
  done
fi
if want split; then
  # Without dattn-split-unions (the default runs it): the GPU tests of
  # every pattern forward and backward with DATTN_SPLIT_UNIONS=0, the
  # examples whose unions hold a dilated member checked, then causal_ring at
  # 16K without and with it.
  export DATTN_SPLIT_UNIONS=0
  split_fail=0
  run_shards split_tests 'AllPatterns/*:GpuForward*:GpuBackward*:GpuRing*'
  for f in causal_ring block_patterns window_global_random_gqa; do
    for name in $(build/bin/dattn check examples/$f.dattn | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
      for det in "" --deterministic; do
        timeout 200 build/bin/dattn run examples/$f.dattn --name "$name" --seq 4096 --device gpu \
          --check --backward $det > "$OUT/split_example.log" 2>&1 ||
          { split_fail=1; echo "FAILED: split $f $name $det"; }
        grep -E "^attention|check:|deterministic" "$OUT/split_example.log" | tee -a "$OUT/split.log"
      done
    done
  done
  unset DATTN_SPLIT_UNIONS
  for split in 0 1; do
    DATTN_SPLIT_UNIONS=$split timeout 200 build/bin/dattn run examples/causal_ring.dattn \
      --seq 16384 --device gpu --iters 10 --backward 2>&1 | grep -E "^device|^backward" |
      sed "s/^/split $split: /" | tee -a "$OUT/split.log"
  done
  rm -f "$OUT/split_example.log"
  summary+=("split examples: $([ $split_fail = 0 ] && echo all passed || echo FAILED)")
  [ $split_fail = 0 ] || status=1
fi
if want patterns; then
  # The sparse examples at 16K, forward+backward, with the default kernels
  # and with each forward family that could take them named
  # (DATTN_FAMILIES): the measurements KernelFamily::byDefault rests on
  # (fp16 on the wgmma forward; bf16 block patterns on it), two rounds.
  for round in 1 2; do
    for fam in default sm80_mma_forward sm90_wgmma_pipelined_forward; do
      for f in window_global_random_gqa causal_ring block_patterns; do
        for name in $(build/bin/dattn check examples/$f.dattn | sed -n 's/^attention \([a-z_0-9]*\) {/\1/p'); do
          line=$( ([ $fam = default ] || export DATTN_FAMILIES=$fam
            timeout 100 build/bin/dattn run examples/$f.dattn --name "$name" --seq 16384 \
              --device gpu --iters 10 --backward 2>&1) | grep -E '^device|^backward' |
            sed 's/.*): //; s/ (median of 10)//' | tr '\n' ' ')
          echo "round $round, $name, $fam: $line" | tee -a "$OUT/patterns.log"
        done
      done
    done
  done
fi
if want wgmma; then
  build/tests/gpu/dattn_gpu_tests --gtest_filter='*Wgmma*' > "$OUT/wgmma_test.log" 2>&1
  rc=$?
  grep -E "^\[  (     OK|FAILED  )" "$OUT/wgmma_test.log"
  summary+=("wgmma family test: exit $rc")
  [ $rc -eq 0 ] || status=1
  if [ "${DATTN_WGMMA_NCU:-0}" = 1 ]; then
    # Where the family's time goes: Nsight Compute on one launch of branch
    # 1 (dilation 2) of head-partitioned LongNet at 64K, each family.
    for fam in sm80_mma_forward sm90_wgmma_forward sm90_wgmma_pipelined_forward sm90_wgmma_tma_forward; do
      ( export DATTN_FAMILIES=$fam
        timeout 240 ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section Occupancy \
          --section MemoryWorkloadAnalysis -k regex:_b1_ --launch-count 1 \
          build/bin/dattn run examples/longnet_head_partitioned.dattn --seq 65536 --device gpu \
          --iters 1 ) > "$OUT/wgmma_ncu_$fam.log" 2>&1
      grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|Registers|Achieved Occupancy|Warp Cycles Per Issued|Issue Slots|Stall" \
        "$OUT/wgmma_ncu_$fam.log" | sed "s/^/$fam: /" | head -24
    done
  fi
  for round in 1 2; do
    for fam in sm80_mma_forward sm90_wgmma_forward sm90_wgmma_pipelined_forward sm90_wgmma_tma_forward; do
      echo "## $fam, round $round" | tee -a "$OUT/wgmma_bench.log"
      ( export DATTN_FAMILIES=$fam
        build/bin/dattn-bench --root . --iters 20 2>&1 | grep -vE "^#" ) |
        tee -a "$OUT/wgmma_bench.log"
    done
  done
fi
if want profile; then
  # Nsight Compute per kernel of the examples in DATTN_PROFILE_EXAMPLES
  # (default: the sparse ones below issue 12's floors) at 16K, forward and
  # backward, one iteration: time, SM and memory throughput, registers and
  # occupancy of the last launch of each kernel (scripts/ncu_table.py).
  # --clock-control none: ncu would otherwise lock the GPU's clocks for the
  # run; the card's settings are left as they are (METHOD.md).
  for f in ${DATTN_PROFILE_EXAMPLES:-window_global_random_gqa causal_ring}; do
    timeout 240 ncu --clock-control none --csv --metrics gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active \
      build/bin/dattn run "examples/$f.dattn" --seq 16384 --device gpu --iters 1 --backward \
      > "$OUT/profile_$f.log" 2>&1
    echo "## $f (ncu, 16K, exit $?)"
    python3 scripts/ncu_table.py "$OUT/profile_$f.log" | tee "$OUT/profile_$f.table.log"
    if [ "${DATTN_PROFILE_STALLS:-0}" = 1 ]; then
      # Where the warps of the dK/dV and forward branch kernels wait: every
      # stall reason ncu counts, per issued instruction.
      timeout 240 ncu --clock-control none --csv -k "regex:_b[0-9]+_" \
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
        build/bin/dattn run "examples/$f.dattn" --seq 16384 --device gpu --iters 1 --backward \
        > "$OUT/stalls_$f.log" 2>&1
      echo "## $f stalls (ncu, 16K, exit $?)"
      python3 scripts/ncu_table.py "$OUT/stalls_$f.log" | tee "$OUT/stalls_$f.table.log"
    fi
  done
fi
if want tf32; then
  # fp32 LongNet (the head-partitioned example in fp32) and the masked
  # example, each with precision tf32 and ieee.
  mkdir -p "$OUT/specs"
  tf32_run() { # label, spec file, extra arguments
    local label=$1 f=$2
    shift 2
    timeout 300 build/bin/dattn run "$f" "$@" --seq 16384 --device gpu --iters 5 --backward \
      > "$OUT/tf32_run.log" 2>&1
    echo "$label: $(grep -E '^device|^backward' "$OUT/tf32_run.log" | tr '\n' ' ')" |
      tee -a "$OUT/tf32.log"
  }
  for p in tf32 ieee; do
    sed "s/dtype = bf16/dtype = fp32\n  precision = $p/" examples/longnet_head_partitioned.dattn \
      > "$OUT/specs/longnet_$p.dattn"
    sed "s/precision = tf32/precision = $p/" examples/block_patterns.dattn \
      > "$OUT/specs/blocks_$p.dattn"
    tf32_run "longnet fp32 $p" "$OUT/specs/longnet_$p.dattn"
    tf32_run "masked $p" "$OUT/specs/blocks_$p.dattn" --name masked
  done
  timeout 300 build/bin/dattn run "$OUT/specs/longnet_tf32.dattn" --seq 4096 --device gpu \
    --iters 2 --backward --check 2>&1 | grep -iE "check" | tee -a "$OUT/tf32.log"
  rm -f "$OUT/tf32_run.log"
fi
pack_logs
print_summary
exit $status
