#!/usr/bin/env bash
# Session plan (temporary; not committed).
set -u
tar xJf build/main-bins.tar.xz
t0=$(date +%s)
DATTN_FILTER='GpuRing*' DATTN_CHECK_LIMIT=130 scripts/device_check.sh tests 2>&1 | tail -12
echo "--- tests took $(( $(date +%s) - t0 )) s"
DATTN_RING_SEQ=131072 DATTN_RINGTABLE_SPECS=bench/dense.dattn DATTN_RINGTABLE_RANKS="1 2" \
  DATTN_CHECK_LIMIT=130 scripts/device_check.sh ringtable 2>&1 | tail -4
echo "--- ringtable done at $(( $(date +%s) - t0 )) s"
export PYTHONPATH=build-py312/python
timeout 40 python3 -m dattn.bench --overhead 2>&1 | tee $OUT/overhead.txt
timeout 70 python3 -m dattn.bench --block-mask 0.1 --seq 16384,65536 --flex --backward 2>&1 | tee $OUT/blockmask.txt | tail -12
echo "--- python done at $(( $(date +%s) - t0 )) s"
left=$(( 560 - ($(date +%s) - t0) ))
DATTN_CHECK_LIMIT=$left scripts/device_check.sh ring 2>&1 | tail -40
echo "--- all done at $(( $(date +%s) - t0 )) s"
