#!/usr/bin/env bash
# Call E2 of 3: model chunks 2 and 4, the Vulkan loader, the gguf wheel for transformers.
set -u
cp .device/q1 /tmp/fd/q1; cp .device/q3 /tmp/fd/q3
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
pip install --no-deps --no-index .device/lcpp/gguf-*.whl > $OUT/pip.txt 2>&1; tail -1 $OUT/pip.txt
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json FDPP_CACHE=/tmp/fdppcache
B=$OUT/bench.txt
for kv in auto f32; do echo "== wgpu smollm2 kv $kv" >> $B; timeout 60 /tmp/fd/bin/fdpp bench --backend wgpu --kv $kv --shape smollm2-135m --prompt 512 --gen 128 --repeats 3 --batch 1 >> $B 2>&1; done
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
