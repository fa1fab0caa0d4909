#!/usr/bin/env bash
# Session 7, call A: a = ba3e28f (split-KV chunks from the key count alone), b = bd4e1ce+
# (chunks from the SM count: ~4 blocks per SM over rows x heads x chunks), c = b with
# SPLIT_BATCH 8 (8 K and 8 V loads in flight per lane instead of 4). Decode with the
# built-in table, one variant after another; the kernels of b and c; b's CUDA unit tests.
set -u
tar xJf .device/bin.tar.xz -C .device
tar xJf .device/ab.tar.xz -C .device
cp .device/bin/fdpp .device/ab/fdpp-b
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 0-15"
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
B=$OUT/bench.txt
for v in a c; do timeout 90 $T .device/ab/fdpp-$v bench --shape smollm2-135m $S --gen 8 --batch 1 > /dev/null 2>&1; done  # compile
echo "compiled at $SECONDS s" >> $B
for v in a b c; do
  echo "== variant $v, 7B" >> $B
  timeout 70 $T .device/ab/fdpp-$v bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $B 2>&1
done
for v in a b c; do
  echo "== variant $v, 7B at 4096" >> $B
  timeout 60 $T .device/ab/fdpp-$v bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $B 2>&1
done
for v in a b c; do
  echo "== variant $v, SmolLM2" >> $B
  timeout 40 $T .device/ab/fdpp-$v bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $B 2>&1
done
echo "benches done at $SECONDS s" >> $B
for v in b c; do
  timeout 50 $T .device/ab/fdpp-$v bench kernels --backend cuda --shape llama2-7b --m 1 --ctx 512,4096 > $OUT/kernels-$v.txt 2>&1
done
FDPP_REQUIRE_CUDA=1 timeout 120 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror| at " $B; grep -iE -A4 "attention" $OUT/kernels-*.txt | head -30
