#!/usr/bin/env bash
# Session 3 final call: the CUDA backend on the H200 (issue 11) after the flash prefill attention --
# carried in the calls before), decode / prefill speed, kernels, and llama.cpp in the same call.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f $FDPP_CACHE/m.part ] && mv $FDPP_CACHE/m.part $M
sha256sum $M > $OUT/model.txt
mkdir -p /work/main/target/release && ln -sf $PWD/.device/bin/fdpp /work/main/target/release/fdpp
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 240 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 240 $T .device/bin/cuda_model --test-threads 1 >> $OUT/tests.txt 2>&1
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 300 $T .device/bin/check --test-threads 2 >> $OUT/tests.txt 2>&1
for w in f32 f16; do timeout 120 $F check --model $M --backends cpu,wgpu,cuda --weights $w --steps 8 --json $OUT/check-$w.json >> $OUT/check.txt 2>&1; echo "exit $?" >> $OUT/check.txt; done
$F generate --backend auto --temperature 0 --max-tokens 16 --model $M "The capital of France is" > $OUT/auto.txt 2>&1
S="--backend cuda --prompt 512 --repeats 3"
timeout 120 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile --json $OUT/smollm2.json > $OUT/bench.txt 2>&1
timeout 200 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile --json $OUT/7b.json >> $OUT/bench.txt 2>&1
timeout 120 $F bench --shape llama2-7b $S --ctx 4096 --gen 64 --batch 1 --json $OUT/7b-4096.json >> $OUT/bench.txt 2>&1
timeout 150 $F bench kernels --backend cuda --shape llama2-7b --m 1,2,4,8,16,64,256 --ctx 512,4096 --json $OUT/kernels-7b.json > $OUT/kernels.txt 2>&1
FDPP_CUBLAS=0 timeout 60 $F bench kernels --backend cuda --shape llama2-7b --m 64,256 --ctx 512 > $OUT/kernels-own-gemm.txt 2>&1
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -E "^exit|first|agree|diverg|within" $OUT/check.txt | head -20; grep -E "backend|^ The" $OUT/auto.txt
grep -E "^ +[0-9]+ +[0-9]|rror" $OUT/bench.txt; tail -3 $OUT/kernels.txt; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json model.txt lcpp-build.log kernels-own-gemm.txt && rm -f *.json model.txt lcpp-build.log kernels-own-gemm.txt; ls $OUT
