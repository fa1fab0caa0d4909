#!/usr/bin/env bash
# Session 5, final call: issue 11 (fused flat GEMM tilings, cuBLAS inside decode graphs) and
# issue 14 (second B tiling): CUDA tests with SmolLM2 (file carried in the two calls before),
# decode with the built-in table (flat-GEMM fusions on and off), fdpp tune (cuda; wgpu SmolLM2),
# decode with the tuned profiles; llama.cpp CUDA in the same call.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
tar xJf .device/bin.tar.xz -C .device
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
S="--backend cuda --prompt 512 --repeats 3"
B="$OUT/bench.txt"
echo "== built-in table" >> $B
timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile --builtin-table --json $OUT/smollm2.json >> $B 2>&1
timeout 70 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile --builtin-table --json $OUT/7b.json >> $B 2>&1
echo "== built-in table, FDPP_CUDA_FLAT_FUSIONS=0" >> $B
FDPP_CUDA_FLAT_FUSIONS=0 timeout 30 $F bench --shape smollm2-135m $S --gen 128 --batch 8 --builtin-table >> $B 2>&1
FDPP_CUDA_FLAT_FUSIONS=0 timeout 50 $F bench --shape llama2-7b $S --gen 64 --batch 8 --builtin-table >> $B 2>&1
for s in smollm2-135m llama2-7b; do timeout 40 $F tune --backend cuda --shape $s --json $OUT/tune-cuda-$s.json > $OUT/tune-cuda-$s.txt 2>&1; echo "exit $?" >> $OUT/tune-cuda-$s.txt; done
timeout 90 $F tune --backend wgpu --shape smollm2-135m --json $OUT/tune-wgpu-smollm2-135m.json > $OUT/tune-wgpu-smollm2-135m.txt 2>&1; echo "exit $?" >> $OUT/tune-wgpu-smollm2-135m.txt
echo "== tuned profiles" >> $B
timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile --json $OUT/smollm2-tuned.json >> $B 2>&1
timeout 70 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --profile --json $OUT/7b-tuned.json >> $B 2>&1
echo "== wgpu SmolLM2, 128-token prompt, built-in then tuned" >> $B
for t in --builtin-table ""; do timeout 30 $F bench --shape smollm2-135m --backend wgpu --prompt 128 --repeats 3 --batch 8 --gen 128 $t >> $B 2>&1; done
$F inspect --shape llama2-7b --backend cuda --m 1,8,32 > $OUT/inspect-7b.txt 2>&1
$F inspect --shape smollm2-135m --backend wgpu --m 8,256 > $OUT/inspect-wgpu.txt 2>&1
for i in $(seq 1 40); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 110 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -hE "^tuned choice|^exit|within 5% of the fastest" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|note|total|linear|attention|^decode" $B; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log inspect-*.txt && rm -f *.json lcpp-build.log inspect-*.txt; ls $OUT
