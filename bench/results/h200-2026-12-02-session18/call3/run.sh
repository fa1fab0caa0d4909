#!/usr/bin/env bash
# Session 18, call 3: FDPP_EXP_FUSED_COMBINE=1: the last chunk block of each (token, head)
# adds the split-KV partials up (no attn_combine launch) against ae3fa46's code (same
# binary, knob off); the CUDA kernel and model tests with the knob on.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
X=$OUT/tests.txt
export FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1
FDPP_EXP_FUSED_COMBINE=1 timeout 150 $T /tmp/fd/bin/runtime-tests backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
FDPP_EXP_FUSED_COMBINE=1 timeout 150 $T /tmp/fd/bin/cuda-model-tests >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
L="--shape llama2-7b $C --repeats 2 --gen 32 --batch 1,8 --ctx 512,4096"
echo "== head SmolLM2" >> $B; timeout 60 $F bench $S >> $B 2>&1
echo "== fused SmolLM2" >> $B; FDPP_EXP_FUSED_COMBINE=1 timeout 60 $F bench $S >> $B 2>&1
echo "== head 7B" >> $B; timeout 80 $F bench $L >> $B 2>&1
echo "== fused 7B" >> $B; FDPP_EXP_FUSED_COMBINE=1 timeout 80 $F bench $L >> $B 2>&1
echo "== head SmolLM2 again" >> $B; timeout 60 $F bench $S >> $B 2>&1
echo "== fused SmolLM2 again" >> $B; FDPP_EXP_FUSED_COMBINE=1 timeout 60 $F bench $S >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|^exit" $X | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
