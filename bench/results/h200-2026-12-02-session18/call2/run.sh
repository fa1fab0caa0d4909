#!/usr/bin/env bash
# Session 18, call 2: ae3fa46's code (one graph launch per step, the flat GEMM's preload at
# one row) with two knobs: FDPP_EXP_BEGIN_TRIGGER=1 (step_begin lets the embedding launch
# at once, the embedding waiting before it lets the next kernel launch), FDPP_EXP_NO_START=1
# (no event before the step's graph: no device time printed); per-node profiles; CUDA tests.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
X=$OUT/tests.txt
FDPP_EXP_BEGIN_TRIGGER=1 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $T /tmp/fd/bin/cuda-model-tests >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
S1="--shape smollm2-135m $C --repeats 5 --gen 32 --batch 1"
L="--shape llama2-7b $C --repeats 2 --gen 32 --batch 1,8"
echo "== head SmolLM2" >> $B; timeout 60 $F bench $S >> $B 2>&1
echo "== trigger SmolLM2" >> $B; FDPP_EXP_BEGIN_TRIGGER=1 timeout 60 $F bench $S >> $B 2>&1
echo "== nostart SmolLM2" >> $B; FDPP_EXP_NO_START=1 timeout 40 $F bench $S1 >> $B 2>&1
echo "== trigger+nostart SmolLM2" >> $B; FDPP_EXP_NO_START=1 FDPP_EXP_BEGIN_TRIGGER=1 timeout 40 $F bench $S1 >> $B 2>&1
echo "== head SmolLM2 b1 again" >> $B; timeout 40 $F bench $S1 >> $B 2>&1
echo "== trigger SmolLM2 b1 again" >> $B; FDPP_EXP_BEGIN_TRIGGER=1 timeout 40 $F bench $S1 >> $B 2>&1
echo "== head 7B" >> $B; timeout 70 $F bench $L >> $B 2>&1
echo "== trigger 7B" >> $B; FDPP_EXP_BEGIN_TRIGGER=1 timeout 70 $F bench $L >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
P=$OUT/profile.txt
echo "== SmolLM2 b1" >> $P; timeout 60 $F bench --shape smollm2-135m $C --repeats 1 --gen 8 --batch 1 --profile >> $P 2>&1
echo "== 7B b1" >> $P; timeout 60 $F bench --shape llama2-7b $C --repeats 1 --gen 8 --batch 1,8 --profile >> $P 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|^exit" $X | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -vE "^fdpp:|^model|^backend" $P | head -80
