#!/usr/bin/env bash
# Session 10, call C: the GEMV with a warp per column group, all of K (<= 768) loaded into
# registers before the PDL wait, chosen by the lowering (Variant::Gemv { per_warp }). The
# experiment's FDPP_EXP_GW_MAX_K sets the largest K that runs it (0: off; default 768:
# SmolLM2's K = 576 products). Pieces loaded as floats again, attention back to 666ff0a's.
# Against 666ff0a (base).
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
X=".device/bin/fdpp"; A=".device/ab/fdpp-base"
FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 90 env "$@" >> $B 2>&1; }
for round in 1 2; do
run "base smollm2 ($round)" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x default (768) smollm2 ($round)" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "x off smollm2 ($round)" FDPP_EXP_GW_MAX_K=0 $X bench --shape smollm2-135m $S --gen 128 --batch 1
done
$X inspect --shape smollm2-135m --backend cuda --m 1 --builtin-table > $OUT/inspect.txt 2>&1 || $X inspect --help > $OUT/inspect.txt 2>&1
echo "benches done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -m3 -i "warp per" $OUT/inspect.txt
