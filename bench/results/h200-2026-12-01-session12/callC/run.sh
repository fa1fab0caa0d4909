#!/usr/bin/env bash
# Session 12, call C: the quantized GEMV split over two lane groups per column pair at every
# K (split) against only from K = 8192 as float weights (nosplit), same call, two rounds.
set -u
mkdir -p /tmp/fd && tar xJf .device/ab2.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3 --batch 1"
for r in 1 2; do
  for v in split nosplit; do
    F=/tmp/fd/ab2/$v
    for t in q4_1 q8_0; do
      echo "== $v SmolLM2 $t r$r" >> $B; timeout 60 $F bench --shape smollm2-135m --shape-type $t $W --weights native --gen 128 >> $B 2>&1
    done
    echo "== $v 7B q4_1 r$r" >> $B; timeout 90 $F bench --shape llama2-7b --shape-type q4_1 $W --weights native --gen 32 >> $B 2>&1
  done
  echo "== f16 SmolLM2 r$r" >> $B; timeout 60 $F bench --shape smollm2-135m $W --weights f16 --gen 128 >> $B 2>&1
done
echo "== split SmolLM2 q4_1 profile" >> $OUT/profile.txt; timeout 60 /tmp/fd/ab2/split bench --shape smollm2-135m --shape-type q4_1 $W --weights native --gen 32 --profile >> $OUT/profile.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B; grep -E "A:gemv|total" $OUT/profile.txt
