#!/usr/bin/env bash
# Session 7, call E: bd08d19 (CUDA microbenchmarks replay each timed pass as a CUDA graph).
# CUDA unit tests; bench kernels on 7B; fdpp tune on SmolLM2 and 7B; decode with the profile
# and with the built-in table.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
T="taskset -c 0-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 120 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
timeout 90 $F bench kernels --backend cuda --shape llama2-7b --m 1,8 --ctx 512,4096 --fused > $OUT/kernels.txt 2>&1
timeout 100 $F tune --backend cuda --shape smollm2-135m --json $OUT/tune-smollm2.json > $OUT/tune-smollm2.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-smollm2.txt
timeout 150 $F tune --backend cuda --shape llama2-7b --json $OUT/tune-llama2-7b.json > $OUT/tune-llama2-7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-llama2-7b.txt
S="--backend cuda --prompt 512 --repeats 3"
B=$OUT/bench.txt
echo "== tuned profile" >> $B
timeout 40 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $B 2>&1
timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $B 2>&1
echo "== built-in table" >> $B
timeout 40 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --builtin-table >> $B 2>&1
timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --builtin-table >> $B 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -E "dispatch floor" $OUT/kernels.txt
grep -hE "^tuned choice|^exit|  \[N=" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
cd $OUT && tar cJf extra.tar.xz *.json && rm -f *.json
