#!/usr/bin/env bash
# Session 7, call B (final): d = 6325227 (chunks from the SM count, tuner timing each
# layer's launches, B's long-K tiling from one row on untuned long-K shapes); b = e11e354
# (the same without the one-row rule). CUDA tests with SmolLM2 (carried in the four calls
# before), decode with the built-in table, fdpp tune on 7B and decode with its profile;
# llama.cpp CUDA in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device
tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
mv $FDPP_CACHE/m.part $M
sha256sum $M > $OUT/model.txt
mkdir -p /work/main/target/release && ln -sf $PWD/.device/bin/fdpp /work/main/target/release/fdpp
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 120 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 150 $T .device/bin/cuda_model --test-threads 1 >> $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
S="--backend cuda --prompt 512 --repeats 3"
B=$OUT/bench.txt
echo "== d, built-in table" >> $B
timeout 70 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile --builtin-table --json $OUT/7b.json >> $B 2>&1
echo "== b, built-in table" >> $B
timeout 50 $T .device/ab/fdpp-b bench --shape llama2-7b $S --gen 64 --batch 1 --builtin-table >> $B 2>&1
echo "== d, built-in table" >> $B
timeout 50 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --builtin-table --json $OUT/smollm2.json >> $B 2>&1
timeout 50 $F bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 --builtin-table >> $B 2>&1
echo "benches done at $SECONDS s" >> $B
timeout 110 $F tune --backend cuda --shape llama2-7b --json $OUT/tune-llama2-7b.json > $OUT/tune-llama2-7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-llama2-7b.txt
echo "== d, tuned profile" >> $B
timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $B 2>&1
$F inspect --shape llama2-7b --backend cuda --m 1,8 --builtin-table > $OUT/inspect-7b.txt 2>&1
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -hE "^tuned choice|^exit|  \[N=" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|total|linear|attention|done at" $B; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log inspect-*.txt && rm -f *.json lcpp-build.log inspect-*.txt; ls $OUT
