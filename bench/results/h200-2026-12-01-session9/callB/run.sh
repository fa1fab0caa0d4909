#!/usr/bin/env bash
# Session 9, call B: the tuner times contenders until their fastest timing is met twice more (issue 14).
# CUDA unit tests; fdpp tune on SmolLM2's and Llama-2-7B's shapes with cuda, on SmolLM2's
# with wgpu (Vulkan); decode with each profile against the built-in table; llama.cpp CUDA
# in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 120 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
for s in smollm2-135m llama2-7b; do
  timeout 120 $F tune --backend cuda --shape $s --json $OUT/tune-cuda-$s.json > $OUT/tune-cuda-$s.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-cuda-$s.txt
done
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3"
for t in "--builtin-table" ""; do
  echo "== cuda SmolLM2 ${t:-tuned}" >> $B; timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 $t >> $B 2>&1
  echo "== cuda 7B ${t:-tuned}" >> $B; timeout 75 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 $t >> $B 2>&1
done
echo "cuda done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
# wgpu (Vulkan) after llama.cpp: all 16 cores free.
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
timeout 150 .device/bin/fdpp tune --backend wgpu --shape smollm2-135m --json $OUT/tune-wgpu-smollm2.json > $OUT/tune-wgpu-smollm2.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-wgpu-smollm2.txt
W="--backend wgpu --prompt 128 --repeats 3 --gen 128 --batch 1,8"
echo "== wgpu SmolLM2 @128, built-in" >> $B; timeout 60 .device/bin/fdpp bench --shape smollm2-135m $W --builtin-table >> $B 2>&1
echo "== wgpu SmolLM2 @128, tuned" >> $B; timeout 60 .device/bin/fdpp bench --shape smollm2-135m $W >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -hE "^tuned choice|^exit" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log && rm -f *.json lcpp-build.log; ls $OUT
