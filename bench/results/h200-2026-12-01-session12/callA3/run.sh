#!/usr/bin/env bash
# Session 12, call A: wgpu (Vulkan) with block-quantized weights read as stored
# (--weights native), synthetic weights of SmolLM2's and Llama-2-7B's shapes, against f16
# weights in the same call; the wgpu kernel tests (quantized ones included) on the H200.
set -u
mkdir -p /tmp/fd && cp .device/m0 /tmp/fd/m0
tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 timeout 150 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3"
for r in 1 2; do
  echo "== SmolLM2 f16 r$r" >> $B; timeout 60 $F bench --shape smollm2-135m $W --weights f16 --gen 128 --batch 1,8 >> $B 2>&1
  for t in q4_1 q8_0; do
    echo "== SmolLM2 native $t r$r" >> $B; timeout 60 $F bench --shape smollm2-135m --shape-type $t $W --weights native --gen 128 --batch 1,8 >> $B 2>&1
  done
done
echo "smollm2 done at $SECONDS s" >> $B
echo "== SmolLM2 native q4_1 profile" >> $OUT/profile.txt; timeout 60 $F bench --shape smollm2-135m --shape-type q4_1 $W --weights native --gen 32 --batch 1 --profile >> $OUT/profile.txt 2>&1
echo "== SmolLM2 f16 profile" >> $OUT/profile.txt; timeout 60 $F bench --shape smollm2-135m $W --weights f16 --gen 32 --batch 1 --profile >> $OUT/profile.txt 2>&1
echo "== 7B f16" >> $B; timeout 120 $F bench --shape llama2-7b $W --weights f16 --gen 32 --batch 1,8 >> $B 2>&1
echo "== 7B native q4_1" >> $B; timeout 120 $F bench --shape llama2-7b --shape-type q4_1 $W --weights native --gen 32 --batch 1,8 >> $B 2>&1

echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|weights on the device|memory resident" $B
