#!/usr/bin/env bash
# Session 5, call 6: the flat GEMM's RMSNorm weight staged in shared memory as halves --
# CUDA kernel tests, bench kernels --fused at M = 8, decode at batch 8 (built-in table).
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests backend::cuda > $OUT/tests.txt 2>&1
timeout 80 $F bench kernels --backend cuda --shape llama2-7b --m 8 --ctx 512 --fused > $OUT/kernels-fused-7b.txt 2>&1
S="--backend cuda --prompt 512 --repeats 3 --batch 8 --builtin-table"
timeout 40 $F bench --shape llama2-7b $S --gen 64 > $OUT/bench.txt 2>&1
timeout 30 $F bench --shape smollm2-135m $S --gen 128 >> $OUT/bench.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -A22 "fused forms" $OUT/kernels-fused-7b.txt | head -22; grep -E "^ +[0-9]+ +[0-9]|rror" $OUT/bench.txt
