#!/usr/bin/env bash
# Session 18, call 4 (record): the final code (12e89a4: a decode step is one graph launch,
# step_begin reading the words from mapped host memory and argmax writing the ids there;
# the flat GEMM's preload at one row; split-KV attention in one launch per layer) against
# 8585148's binary (base, session 17's final), same call; the CUDA kernel and model tests;
# bench kernels; llama.cpp CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd /tmp/base && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/base.tar.xz -C /tmp/base
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"; FB="$T /tmp/base/bin/fdpp"
X=$OUT/tests.txt
export FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1
timeout 150 $T /tmp/fd/bin/runtime-tests backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
timeout 150 $T /tmp/fd/bin/cuda-model-tests >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
L="--shape llama2-7b $C --repeats 2 --gen 32 --batch 1,8 --ctx 512,4096"
echo "== base SmolLM2" >> $B; timeout 60 $FB bench $S >> $B 2>&1
echo "== final SmolLM2" >> $B; timeout 60 $F bench $S >> $B 2>&1
echo "== base 7B" >> $B; timeout 70 $FB bench $L >> $B 2>&1
echo "== final 7B" >> $B; timeout 70 $F bench $L >> $B 2>&1
echo "== final SmolLM2 again" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
timeout 60 $F bench kernels --backend cuda --shape llama2-7b --m 1,8 --ctx 512,4096 > $OUT/k7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/k7b.txt
for i in $(seq 1 50); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 110 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|^exit" $X | head
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "^ +(1|8) |^ +(512|4096) |read " $OUT/k7b.txt | head -24
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
