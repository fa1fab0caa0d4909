#!/usr/bin/env bash
# Session 6, call 1: the flat GEMM's branch-free main loop (+ L2 prefetch at distance D, an
# experiment knob) and a 16-warp tiling: CUDA unit tests, bench kernels --fused at M = 8 on
# Llama-2-7B's shapes for D = 0, 4, 8; decode of both shapes at D = 0 and the best guess.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 0-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 150 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt
for d in 0 4 8; do
  FDPP_CUDA_FLAT_PREFETCH=$d timeout 100 $F bench kernels --backend cuda --shape llama2-7b --m 1,8 --ctx 512 --fused --json $OUT/kernels-d$d.json > $OUT/kernels-d$d.txt 2>&1
  echo "exit $?" >> $OUT/kernels-d$d.txt
done
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
for d in 0 4; do
  echo "== D=$d" >> $OUT/bench.txt
  FDPP_CUDA_FLAT_PREFETCH=$d timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $OUT/bench.txt 2>&1
  FDPP_CUDA_FLAT_PREFETCH=$d timeout 40 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $OUT/bench.txt 2>&1
done
grep -E "^==|^ +[0-9]+ +[0-9]|rror|total" $OUT/bench.txt
for d in 0 4 8; do echo "== D=$d"; grep -A24 "fused forms" $OUT/kernels-d$d.txt; tail -1 $OUT/kernels-d$d.txt; done
