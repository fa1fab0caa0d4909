#!/usr/bin/env bash
# Session 10, call A: experiment, the GEMV with a warp per 4 columns and its first weights
# loaded before the PDL wait (`_w` kernels, FDPP_EXP_GEMV_WARP_K = the largest K that runs
# them, FDPP_EXP_GEMV_WARPS = warps per block), against 666ff0a (base). CUDA unit tests with
# every K % 8 == 0 GEMV on `_w`.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
X=".device/bin/fdpp"; A=".device/ab/fdpp-base"
FDPP_EXP_GEMV_WARP_K=1000000 FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 90 env "$@" >> $B 2>&1; }
run "base smollm2" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x off smollm2" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x w4 k2048 smollm2" FDPP_EXP_GEMV_WARP_K=2048 $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x w2 k2048 smollm2" FDPP_EXP_GEMV_WARP_K=2048 FDPP_EXP_GEMV_WARPS=2 $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "x w8 k2048 smollm2" FDPP_EXP_GEMV_WARP_K=2048 FDPP_EXP_GEMV_WARPS=8 $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "x w4 k600 smollm2" FDPP_EXP_GEMV_WARP_K=600 $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "base smollm2 again" $A bench --shape smollm2-135m $S --gen 128 --batch 1
run "x w4 k2048 smollm2 again" FDPP_EXP_GEMV_WARP_K=2048 $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "base 7b" $A bench --shape llama2-7b $S --gen 64 --batch 1
run "x w4 all 7b" FDPP_EXP_GEMV_WARP_K=100000 $X bench --shape llama2-7b $S --gen 64 --batch 1
run "x w8 all 7b" FDPP_EXP_GEMV_WARP_K=100000 FDPP_EXP_GEMV_WARPS=8 $X bench --shape llama2-7b $S --gen 64 --batch 1
echo "benches done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
