#!/usr/bin/env bash
# Session 8, call D: n = a9aebc3 (the lane geometry before the wait again; attn_single for short contexts of many (token, head)
# pairs) against a = 5db5273. CUDA
# unit tests, fdpp check on SmolLM2's shapes, decode A/B, 7B at 4096;
# llama.cpp CUDA in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
N="$T .device/bin/fdpp"; A="$T .device/ab/fdpp-s8a"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
for w in f16 f32; do timeout 60 $N check --shape smollm2-135m --backends cpu,cuda --weights $w --steps 24 >> $OUT/check.txt 2>&1; echo "exit $? ($w)" >> $OUT/check.txt; done
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
timeout 40 $A bench --shape smollm2-135m $S --gen 8 > /dev/null 2>&1 # compile a's kernels
run() { echo "== $1" >> $B; shift; timeout 80 "$@" >> $B 2>&1; }
run "n smollm2" $N bench --shape smollm2-135m $S --gen 128 --batch 1,8 --json $OUT/n-smollm2.json
run "a smollm2" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "n 7b" $N bench --shape llama2-7b $S --gen 64 --batch 1,8 --json $OUT/n-7b.json
run "a 7b" $A bench --shape llama2-7b $S --gen 64 --batch 1,8
run "n 7b at 4096" $N bench --shape llama2-7b $S --gen 64 --ctx 4096 --batch 1 --json $OUT/n-7b-4096.json
echo "benches done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -E "exit|PASS|FAIL" $OUT/check.txt | head
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log && rm -f *.json lcpp-build.log; ls $OUT
