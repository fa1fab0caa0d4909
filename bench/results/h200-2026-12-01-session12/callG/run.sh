#!/usr/bin/env bash
# Session 12, call G: the quantized GEMV's rounds as long as a lane's words need (adapt:
# SmolLM2's K = 576 one round of three, not four) against bfe2b52 (head); adaptsplit is adapt
# with every wgpu GEMV split over two lane groups (GEMV_SPLIT_K_MIN 0; f16 too: not compared).
set -u
mkdir -p /tmp/fd && tar xJf .device/ab4.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3 --batch 1"
for r in 1 2; do
  for v in head adapt adaptsplit; do
    echo "== $v SmolLM2 q4_1 r$r" >> $B; timeout 60 /tmp/fd/ab4/$v bench --shape smollm2-135m --shape-type q4_1 $W --weights native --gen 128 >> $B 2>&1
  done
done
for v in head adapt; do
  echo "== $v SmolLM2 q8_0" >> $B; timeout 60 /tmp/fd/ab4/$v bench --shape smollm2-135m --shape-type q8_0 $W --weights native --gen 128 >> $B 2>&1
  echo "== $v 7B q4_1" >> $B; timeout 90 /tmp/fd/ab4/$v bench --shape llama2-7b --shape-type q4_1 $W --weights native --gen 32 >> $B 2>&1
done
echo "== head SmolLM2 f16" >> $B; timeout 60 /tmp/fd/ab4/head bench --shape smollm2-135m $W --weights f16 --gen 128 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
