#!/usr/bin/env bash
# Session 7, call H: h = f327513 (B's wide tiling for the LM head from one row), g = fa0dab5.
# CUDA unit tests of h; SmolLM2 decode with the built-in table, h and g interleaved twice.
set -u
tar xJf .device/bin.tar.xz -C .device
tar xJf .device/ab.tar.xz -C .device
cp .device/bin/fdpp .device/ab/fdpp-h
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 0-15"
FDPP_REQUIRE_CUDA=1 timeout 120 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
B=$OUT/bench.txt
for r in 1 2; do for v in h g; do
  echo "== round $r, $v" >> $B
  timeout 40 $T .device/ab/fdpp-$v bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $B 2>&1
done; done
.device/ab/fdpp-h inspect --shape smollm2-135m --backend cuda --m 1 --builtin-table 2>&1 | grep -i "lm_head" > $OUT/inspect.txt
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B; cat $OUT/inspect.txt | cut -c1-300
