#!/usr/bin/env bash
# Session 18, call 5: the review commit's executor (step_begin/argmax arguments built once,
# flag count derived) through the CUDA kernel and model tests.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
export FDPP_CACHE=/tmp/fdppcache FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1; mkdir -p $FDPP_CACHE
X=$OUT/tests.txt
timeout 140 /tmp/fd/bin/runtime-tests backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
timeout 60 /tmp/fd/bin/cuda-model-tests >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
grep -E "test result|FAILED|panicked|^exit" $X
