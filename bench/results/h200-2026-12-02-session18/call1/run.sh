#!/usr/bin/env bash
# Session 18, call 1: a step as one graph launch (step_begin reads the words from mapped
# host memory, argmax writes the ids there; no copies or memsets around the graph) against
# 8585148's binary (base), same call; FDPP_EXP_FLAT_PRELOAD=1: the flat GEMM's first batch
# in registers before the PDL wait at one row on the 16-warp tiling (session 17's
# unmeasured call 4); the CUDA tests, the CUDA model tests; llama.cpp CUDA in the same call.
set -u
mkdir -p /tmp/fd /tmp/base && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/base.tar.xz -C /tmp/base
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"; FB="$T /tmp/base/bin/fdpp"
X=$OUT/tests.txt
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $T /tmp/fd/bin/runtime-tests backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $T /tmp/fd/bin/cuda-model-tests >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
L="--shape llama2-7b $C --repeats 2 --gen 32 --batch 1,8 --ctx 512,4096"
echo "== base SmolLM2" >> $B; timeout 60 $FB bench $S >> $B 2>&1
echo "== new SmolLM2" >> $B; timeout 60 $F bench $S >> $B 2>&1
echo "== base 7B" >> $B; timeout 70 $FB bench $L >> $B 2>&1
echo "== new 7B" >> $B; timeout 70 $F bench $L >> $B 2>&1
echo "== new+flatpre 7B" >> $B; FDPP_EXP_FLAT_PRELOAD=1 timeout 80 $F bench $L >> $B 2>&1
echo "== new+flatpre SmolLM2" >> $B; FDPP_EXP_FLAT_PRELOAD=1 timeout 40 $F bench $S >> $B 2>&1
echo "== new SmolLM2 again" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "== new SmolLM2 gen 128" >> $B; timeout 40 $F bench --shape smollm2-135m $C --repeats 3 --gen 128 --batch 1 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
for i in $(seq 1 50); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 110 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|^exit|skipped" $X | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
