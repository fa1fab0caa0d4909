#!/usr/bin/env bash
# Session 9, call E: the GEMV with its column count from GV_COLS (4, as before): CUDA unit
# tests and decode against 3016850 (base).
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache3; mkdir -p $FDPP_CACHE
FDPP_REQUIRE_CUDA=1 timeout 100 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
B=$OUT/bench.txt; S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
for f in .device/ab/fdpp-base .device/bin/fdpp; do echo "== $f" >> $B; timeout 60 $f bench --shape smollm2-135m $S --gen 128 --batch 1 >> $B 2>&1; done
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
