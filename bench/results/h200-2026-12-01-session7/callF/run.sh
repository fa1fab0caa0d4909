#!/usr/bin/env bash
# Session 7, call F: bd08d19. Where SmolLM2's batch-1 decode step spends its ~600 us: ncu's
# duration of every kernel (serialised, so programmatic dependent launch overlaps nothing),
# graphs off so each launch is its own.
set -u
[ -x .device/bin/fdpp ] || tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU" > $OUT/ncu.txt
.device/bin/fdpp bench --shape smollm2-135m --backend cuda --prompt 64 --gen 2 --batch 1 --repeats 1 --builtin-table > /dev/null 2>&1  # compile
FDPP_CUDA_GRAPHS=0 timeout 400 $NCU --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
  .device/bin/fdpp bench --shape smollm2-135m --backend cuda --prompt 64 --gen 3 --batch 1 --repeats 1 --builtin-table > $OUT/ncu.csv 2>> $OUT/ncu.txt
echo "exit $? at $SECONDS s" >> $OUT/ncu.txt
tail -3 $OUT/ncu.txt; wc -l $OUT/ncu.csv; head -c 600 $OUT/ncu.csv
