#!/usr/bin/env bash
# Session 11, call C1 of 4 (build of 65f2d9d): the binaries and the last
# model chunk arrive; the SIMT kernel set (FDPP_CUDA_TENSOR_CORES=0, what HIP runs) decodes
# with the GEMV up to 8 rows; control: fdpp check of synthetic 7B on the full CUDA backend.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd && cp .device/q3 /tmp/fd/q3
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
X=/tmp/fd/bin/fdpp
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 100 "$@" >> $B 2>&1; }
run "simt smollm2" env FDPP_CUDA_TENSOR_CORES=0 $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "simt 7b" env FDPP_CUDA_TENSOR_CORES=0 $X bench --shape llama2-7b $S --gen 32 --batch 1,8
C=$OUT/check.txt
echo "== tc check llama2-7b f16" >> $C; timeout 100 $X check --shape llama2-7b --backends cpu,cuda --weights f16 --steps 4 >> $C 2>&1; echo "exit $?" >> $C
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B; grep -E "^==|^exit|PASS|FAIL" $C
