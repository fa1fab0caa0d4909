#!/usr/bin/env bash
# Session 5, call 1: issue 11 -- the flat GEMM's six tilings and fused prologue/epilogues
# (CUDA kernel tests, bench kernels over every tiling, decode end to end), llama.cpp CUDA in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 200 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 timeout 200 $T .device/bin/cuda_model tiny --test-threads 1 >> $OUT/tests.txt 2>&1
S="--backend cuda --prompt 512 --repeats 3"
timeout 60 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile --json $OUT/smollm2.json > $OUT/bench.txt 2>&1
timeout 100 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile --json $OUT/7b.json >> $OUT/bench.txt 2>&1
timeout 150 $F bench kernels --backend cuda --shape llama2-7b --m 1,2,4,8,16,32,64 --ctx 512,4096 --json $OUT/kernels-7b.json > $OUT/kernels.txt 2>&1
timeout 60 $F bench kernels --backend cuda --shape smollm2-135m --m 1,8,16 --ctx 512 --json $OUT/kernels-smol.json > $OUT/kernels-smol.txt 2>&1
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -E "^ +[0-9]+ +[0-9]|rror|total|linear|attention" $OUT/bench.txt; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log && rm -f *.json lcpp-build.log; ls $OUT
