#!/usr/bin/env bash
# Session 7, call C: 6325227 (as call B). fdpp tune on SmolLM2's shapes with cuda and with
# wgpu (each variant timed with its layer's launches), then decode with each profile
# against the built-in table (wgpu after a 128-token prompt, as issue 14 asks).
set -u
[ -x .device/bin/fdpp ] || tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 0-15"
F="$T .device/bin/fdpp"
B=$OUT/bench.txt
timeout 120 $F tune --backend cuda --shape smollm2-135m --json $OUT/tune-smollm2-cuda.json > $OUT/tune-smollm2-cuda.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-smollm2-cuda.txt
S="--backend cuda --prompt 512 --repeats 3 --gen 128 --batch 1,8"
echo "== cuda SmolLM2, tuned" >> $B; timeout 40 $F bench --shape smollm2-135m $S >> $B 2>&1
echo "== cuda SmolLM2, built-in" >> $B; timeout 40 $F bench --shape smollm2-135m $S --builtin-table >> $B 2>&1
timeout 150 $F tune --backend wgpu --shape smollm2-135m --json $OUT/tune-smollm2-wgpu.json > $OUT/tune-smollm2-wgpu.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-smollm2-wgpu.txt
W="--backend wgpu --prompt 128 --repeats 3 --gen 128 --batch 1,8"
echo "== wgpu SmolLM2, built-in" >> $B; timeout 60 $F bench --shape smollm2-135m $W --builtin-table >> $B 2>&1
echo "== wgpu SmolLM2, tuned" >> $B; timeout 60 $F bench --shape smollm2-135m $W >> $B 2>&1
grep -hE "^tuned choice|^exit|  \[N=|^fdpp: tuning" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
cd $OUT && tar cJf extra.tar.xz *.json && rm -f *.json
