#!/usr/bin/env bash
# Session 6, call 3: A/B/C in one call, no other load. a = 72f685a (split-KV in one
# launch), b = a without it (split + combine), c = b with the long-K default only up to
# N = 8192 (QKV back on the first tiling). Built-in table, decode after 512 tokens.
set -u
tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 0-15"
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
for v in a b c; do timeout 60 $T .device/fdpp-$v bench --shape smollm2-135m $S --gen 8 --batch 1 > /dev/null 2>&1; done  # compile
for r in 1 2; do for v in a b c; do
  echo "== round $r variant $v" >> $OUT/bench.txt
  timeout 60 $T .device/fdpp-$v bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $OUT/bench.txt 2>&1
  timeout 40 $T .device/fdpp-$v bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $OUT/bench.txt 2>&1
done; done
echo "== variant b, FDPP_CUDA_FLAT_FUSIONS=0" >> $OUT/bench.txt
FDPP_CUDA_FLAT_FUSIONS=0 timeout 60 $T .device/fdpp-b bench --shape llama2-7b $S --gen 64 --batch 8 >> $OUT/bench.txt 2>&1
echo "== variant b, 7B at 4096" >> $OUT/bench.txt
timeout 60 $T .device/fdpp-b bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
echo "== variant a, 7B at 4096" >> $OUT/bench.txt
timeout 60 $T .device/fdpp-a bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $OUT/bench.txt
