#!/usr/bin/env bash
# Session 6, call 5: split-KV chunks capped at 16 (fdpp-16) against 32 (fdpp-32, f544c56):
# bench kernels' decode attention, and decode at 512 and 4096 keys, same call.
set -u
tar xJf .device/ch.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 0-15"
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
for v in 32 16; do
  echo "== max chunks $v" >> $OUT/bench.txt
  timeout 60 $T .device/fdpp-$v bench kernels --backend cuda --shape llama2-7b --m 1 --ctx 512,1024,2048,4096 > $OUT/kernels-$v.txt 2>&1
  grep -A6 "decode attention" $OUT/kernels-$v.txt >> $OUT/bench.txt
  timeout 50 $T .device/fdpp-$v bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
  timeout 50 $T .device/fdpp-$v bench --shape llama2-7b $S --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
  timeout 30 $T .device/fdpp-$v bench --shape smollm2-135m $S --gen 128 --batch 1 >> $OUT/bench.txt 2>&1
done
cat $OUT/bench.txt | grep -v '^ *ctx batch'
