#!/usr/bin/env bash
# Call C2 (of C2-C4; C1's machine was given back before C2: the tree is carried without
# tests/data/tokenizer so that two chunks fit): binaries and model chunk 1; CUDA kernel
# tests with and without the tensor-core kernels.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd && cp .device/q0 /tmp/fd/q0
T=$OUT/tests.txt
echo "== default" > $T; FDPP_REQUIRE_CUDA=1 timeout 120 /tmp/fd/bin/runtime-tests cuda >> $T 2>&1
echo "== simt" >> $T; FDPP_CUDA_TENSOR_CORES=0 FDPP_REQUIRE_CUDA=1 timeout 120 /tmp/fd/bin/runtime-tests cuda >> $T 2>&1
grep -E "^==|test result|FAILED|panicked" $T
