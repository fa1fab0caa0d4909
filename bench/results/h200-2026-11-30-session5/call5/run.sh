#!/usr/bin/env bash
# Session 5, call 5: what the flat GEMM's and the GEMV's fused forms cost inside the kernel
# (bench kernels --fused, Llama-2-7B's shapes at M = 8).
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
timeout 170 taskset -c 12-15 .device/bin/fdpp bench kernels --backend cuda --shape llama2-7b --m 8 --ctx 512 --fused --json $OUT/kernels-fused-7b.json > $OUT/kernels-fused-7b.txt 2>&1
echo "exit $?" >> $OUT/kernels-fused-7b.txt
grep -A22 "fused forms" $OUT/kernels-fused-7b.txt; tail -2 $OUT/kernels-fused-7b.txt
