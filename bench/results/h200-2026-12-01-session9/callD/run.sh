#!/usr/bin/env bash
# Session 9, call D: experiment, GEMV blocks of 8 columns (GV_COLS 8: half the blocks, so
# half the re-reads of the activations and norm weights from L2) against 3016850 (base,
# 4 columns). CUDA unit tests on the experiment; llama.cpp CUDA in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache2; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
X="$T .device/bin/fdpp"; A="$T .device/ab/fdpp-base"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 90 "$@" >> $B 2>&1; }
run "base 7b" $A bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 512,4096
run "x 7b" $X bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 512,4096
run "base 7b b8" $A bench --shape llama2-7b $S --gen 64 --batch 8
run "x 7b b8" $X bench --shape llama2-7b $S --gen 64 --batch 8
run "base smollm2" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x smollm2" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "base 7b again" $A bench --shape llama2-7b $S --gen 64 --batch 1
run "x 7b again" $X bench --shape llama2-7b $S --gen 64 --batch 1
echo "benches done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log; ls $OUT
