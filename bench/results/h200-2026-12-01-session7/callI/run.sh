#!/usr/bin/env bash
# Session 7, call I: f327513, cuda_model with SmolLM2 (carried in the four calls before).
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
mv $FDPP_CACHE/m.part $M
sha256sum $M > $OUT/model.txt
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 150 .device/bin/cuda_model --test-threads 1 > $OUT/tests.txt 2>&1
grep -E "test |test result|FAILED|panicked" $OUT/tests.txt; cat $OUT/model.txt

# Second command, same machine (the first had not linked target/release/fdpp, which the SmolLM2 test runs):
# mkdir -p /work/main/target/release && ln -sf $PWD/.device/bin/fdpp /work/main/target/release/fdpp && FDPP_CACHE=/tmp/fdppcache FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 150 .device/bin/cuda_model --test-threads 1
