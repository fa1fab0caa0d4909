#!/usr/bin/env bash
# Session 3, call 1: flash prefill attention + single-launch split-KV: CUDA tests (with the
# SmolLM2 file carried in the calls before), benches (no llama.cpp in this call).
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f $FDPP_CACHE/m.part ] && mv $FDPP_CACHE/m.part $M
sha256sum $M
mkdir -p /work/main/target/release && ln -sf $PWD/.device/bin/fdpp /work/main/target/release/fdpp
F=.device/bin/fdpp
FDPP_REQUIRE_CUDA=1 timeout 240 .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 240 .device/bin/cuda_model --test-threads 1 >> $OUT/tests.txt 2>&1
grep -E "test |test result|FAILED|panicked|error" $OUT/tests.txt | grep -v " ok$" | head -40
S="--backend cuda --prompt 512 --repeats 3"
timeout 120 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile > $OUT/bench.txt 2>&1
timeout 200 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile >> $OUT/bench.txt 2>&1
timeout 120 $F bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $OUT/bench.txt 2>&1
grep -E "^ +[0-9]+ +[0-9]|rror|^  (attention|linear|total)|^(prefill|decode)" $OUT/bench.txt
timeout 150 $F bench kernels --backend cuda --shape llama2-7b --m 1,8 --ctx 512,4096 > $OUT/kernels.txt 2>&1
tail -12 $OUT/kernels.txt
