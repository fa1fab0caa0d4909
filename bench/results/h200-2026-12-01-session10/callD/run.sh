#!/usr/bin/env bash
# Session 10, call D: two experiments against ca17086 (prev, the per-warp GEMV up to K = 768):
# 1. the per-warp GEMV up to K = 1536, one column pair per warp and twice the preloaded
#    pieces past 768 (`_w2`; FDPP_EXP_GW_MAX_K=768 turns it back off);
# 2. split-KV attention loading its first batch of keys before the PDL wait (every key but
#    the one this step writes was written by earlier steps; FDPP_EXP_ATT_PRELOAD=1).
# CUDA unit tests with and without the attention preload.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
X=".device/bin/fdpp"; A=".device/ab/fdpp-prev"
FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_EXP_ATT_PRELOAD=1 FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests-preload.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 150 env "$@" >> $B 2>&1; }
for round in 1 2; do
run "prev smollm2 ($round)" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x 768 smollm2 ($round)" FDPP_EXP_GW_MAX_K=768 $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x 1536 smollm2 ($round)" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x 1536 + att preload smollm2 ($round)" FDPP_EXP_ATT_PRELOAD=1 $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
done
run "prev 7b" $A bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 512,4096
run "x 7b" $X bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 512,4096
run "x att preload 7b" FDPP_EXP_ATT_PRELOAD=1 $X bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 512,4096
echo "benches done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt $OUT/tests-preload.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
