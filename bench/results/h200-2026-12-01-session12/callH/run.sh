#!/usr/bin/env bash
# Session 12, call H: the GEMV's column mapping and four-row finish shared by the float and
# the quantized GEMV (new) against bfe2b52 (head), same call, two rounds; then CUDA SmolLM2.
set -u
mkdir -p /tmp/fd && tar xJf .device/ab5.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3 --batch 1"
for r in 1 2; do
  for v in head new; do
    echo "== $v SmolLM2 f16 r$r" >> $B; timeout 40 /tmp/fd/ab5/$v bench --shape smollm2-135m $W --weights f16 --gen 128 >> $B 2>&1
    echo "== $v SmolLM2 q4_1 r$r" >> $B; timeout 40 /tmp/fd/ab5/$v bench --shape smollm2-135m --shape-type q4_1 $W --weights native --gen 128 >> $B 2>&1
  done
done
for v in head new; do
  echo "== $v 7B f16" >> $B; timeout 60 /tmp/fd/ab5/$v bench --shape llama2-7b $W --weights f16 --gen 32 >> $B 2>&1
done
echo "wgpu done at $SECONDS s" >> $B
echo "== new cuda SmolLM2" >> $B; timeout 70 /tmp/fd/ab5/new bench --shape smollm2-135m --backend cuda --prompt 512 --repeats 3 --builtin-table --gen 128 --batch 1,8 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
