#!/usr/bin/env bash
# Session 6, call 6: split-KV chunk lengths as multiples of the key tile (the commit after
# f544c56): CUDA unit tests, then decode of 7B at 4096 and 512 keys and SmolLM2 at 512.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 0-15"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
timeout 50 $T .device/bin/fdpp bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
timeout 60 $T .device/bin/fdpp bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $OUT/bench.txt 2>&1
timeout 30 $T .device/bin/fdpp bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $OUT/bench.txt 2>&1
grep -E "^ +[0-9]+ +[0-9]|rror" $OUT/bench.txt
