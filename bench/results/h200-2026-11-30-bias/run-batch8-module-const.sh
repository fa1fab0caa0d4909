#!/usr/bin/env bash
# Device call: HEAD with BIASED as a module constant on the H200: conformance fixtures and kernel tests on wgpu,
# and decode at batch 1 and 8 against 9a7cdba, alternating.
set -u
tar xJf .device/bin.tar.xz -C .device
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp
FDPP_REQUIRE_GPU=1 .device/bin/runtime-tests wgpu > $OUT/tests.txt 2>&1
FDPP_REQUIRE_GPU=1 .device/bin/conformance --nocapture >> $OUT/tests.txt 2>&1
S="--backend wgpu --prompt 128 --repeats 3 --batch 1,8"
for b in fdpp fdpp-9a7cdba; do
  echo "== $b smollm2" >> $OUT/bench.txt; timeout 100 .device/bin/$b bench --shape smollm2-135m $S --gen 128 >> $OUT/bench.txt 2>&1
  echo "== $b 7b" >> $OUT/bench.txt; timeout 150 .device/bin/$b bench --shape llama2-7b $S --gen 64 >> $OUT/bench.txt 2>&1
done
grep -E "test result|FAILED|panicked" $OUT/tests.txt; grep -c "on wgpu: logits within" $OUT/tests.txt; grep -E "^== |^ +128" $OUT/bench.txt
