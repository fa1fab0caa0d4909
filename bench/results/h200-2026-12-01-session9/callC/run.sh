#!/usr/bin/env bash
# Session 9, call C (after three calls that appended .device/q0..q2 to /tmp/fdppcache/m.part):
# CUDA unit tests, cuda_model (SmolLM2's reference prompts: the CPU's greedy tokens at f16
# and f32 weights) and fdpp check cpu,cuda on the real model, on this session's final code.
set -u
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
cat .device/q3 >> $FDPP_CACHE/m.part
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
mv $FDPP_CACHE/m.part $M; sha256sum $M > $OUT/model.txt
tar xJf .device/bin.tar.xz -C .device
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
# The test runs the fdpp binary at the path it was built for.
mkdir -p /work/main/target/release && ln -sf $PWD/.device/bin/fdpp /work/main/target/release/fdpp
FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 200 .device/bin/cuda_model --test-threads 1 > $OUT/cuda_model.txt 2>&1
for w in f16 f32; do timeout 90 .device/bin/fdpp check --model $M --backends cpu,cuda --weights $w >> $OUT/check.txt 2>&1; echo "exit $? ($w)" >> $OUT/check.txt; done
grep -E "test result|FAILED|panicked" $OUT/tests.txt $OUT/cuda_model.txt; grep -E "exit|agree|PASS|FAIL|differ" $OUT/check.txt | head; cat $OUT/model.txt
