#!/usr/bin/env bash
# Session 14, call 7 (B with two rounds of B loads in flight, rms_norm on vec4s; call 6 ran the same script on one round, before the rms_norm change): the matrix tests
# (required), 7B and SmolLM2 decode at batch 1 and 8 (profile of the batch-8 step).
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 90 /tmp/fd/bin/runtime-tests backend::wgpu::tests::matrix backend::wgpu::tests::row > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table --prompt 512"
echo "== 7B" >> $B; timeout 120 $F bench --shape llama2-7b $W --repeats 2 --gen 32 --batch 1,8 --profile >> $B 2>&1
echo "== SmolLM2" >> $B; timeout 60 $F bench --shape smollm2-135m $W --repeats 3 --gen 64 --batch 1,8 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit|relative error" $OUT/tests.txt | head -10
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|B:|flat|  total|step" $B | head -60
