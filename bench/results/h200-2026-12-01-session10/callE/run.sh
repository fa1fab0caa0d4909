#!/usr/bin/env bash
# Session 10, call E: the per-warp GEMV up to K = 1536 (`_w2` past 768: a column pair per
# warp, twice the preloaded pieces; attention as in ca17086), against ca17086 (prev, up to
# K = 768), with FDPP_EXP_GW_WARPS warps per block (default 4). CUDA unit tests.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
X=".device/bin/fdpp"; A=".device/ab/fdpp-prev"
FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 90 env "$@" >> $B 2>&1; }
for round in 1 2; do
run "prev smollm2 ($round)" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x w4 smollm2 ($round)" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x w2 smollm2 ($round)" FDPP_EXP_GW_WARPS=2 $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "x w1 smollm2 ($round)" FDPP_EXP_GW_WARPS=1 $X bench --shape smollm2-135m $S --gen 128 --batch 1
done
echo "benches done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
