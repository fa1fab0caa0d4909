#!/usr/bin/env bash
# Session 11, call A: the native executor refactor (615e8b2: CUDA's executor written against
# the Gpu trait) against cd7e105 (prev). CUDA kernel tests, cuda_model (tiny models; no
# SmolLM2 file here), decode and prefill A/B, interleaved.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
X=".device/bin/fdpp"; A=".device/ab/fdpp-prev"
nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/gpu.txt 2>&1
FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 timeout 200 .device/bin/cuda_model --test-threads 1 >> $OUT/tests.txt 2>&1
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 5 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 80 "$@" >> $B 2>&1; }
for r in 1 2; do
run "prev smollm2 r$r" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x smollm2 r$r" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "prev 7b r$r" $A bench --shape llama2-7b $S --gen 32 --batch 1,8
run "x 7b r$r" $X bench --shape llama2-7b $S --gen 32 --batch 1,8
done
echo "done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
