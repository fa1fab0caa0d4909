#!/usr/bin/env bash
# Session 7, call G (final): g = fa0dab5 (argmax over 64 blocks per row), e = bd08d19 (one
# block per row). CUDA tests with SmolLM2 (carried in the four calls before), decode with
# the built-in table (g and e on SmolLM2), fdpp tune on SmolLM2's shapes and decode with its
# profile; llama.cpp CUDA in the same call.
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
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
B=$OUT/bench.txt
timeout 60 $T .device/ab/fdpp-e bench --shape smollm2-135m $S --gen 8 --batch 1 > /dev/null 2>&1  # compile
echo "== g, built-in table" >> $B
timeout 40 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --json $OUT/smollm2.json >> $B 2>&1
echo "== e, built-in table" >> $B
timeout 40 $T .device/ab/fdpp-e bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $B 2>&1
echo "== g, built-in table" >> $B
timeout 70 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --json $OUT/7b.json >> $B 2>&1
timeout 50 $F bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 >> $B 2>&1
echo "benches done at $SECONDS s" >> $B
timeout 100 $F tune --backend cuda --shape smollm2-135m --json $OUT/tune-smollm2.json > $OUT/tune-smollm2.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-smollm2.txt
echo "== g, tuned profile" >> $B
timeout 40 $F bench --shape smollm2-135m --backend cuda --prompt 512 --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -hE "^tuned choice|^exit" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log && rm -f *.json lcpp-build.log; ls $OUT
