#!/usr/bin/env bash
# Session 10, call G: the GEMV kernels with their column mapping and inner step shared
# (gemv_columns, gemv_piece), against 5378cb6 (prev). CUDA unit tests; decode.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
X=".device/bin/fdpp"; A=".device/ab/fdpp-prev"
FDPP_REQUIRE_CUDA=1 timeout 100 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 50 "$@" >> $B 2>&1; }
run "prev smollm2" $A bench --shape smollm2-135m $S --gen 128 --batch 1
run "x smollm2" $X bench --shape smollm2-135m $S --gen 128 --batch 1
run "prev 7b" $A bench --shape llama2-7b $S --gen 32 --batch 1
run "x 7b" $X bench --shape llama2-7b $S --gen 32 --batch 1
echo "done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
