#!/usr/bin/env bash
# Session 13, call E: gemm_matrix v4 (steps of 64 along K: twelve loads per invocation in
# flight per round trip) against v3 (ab_v3: steps of 32), same call; the wgpu tests; a 7B
# prefill profile; bench kernels at M = 16, 64, 512.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/ab_v3.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/bin/fdpp; V3=/tmp/fd/ab_v3/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 200 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
timeout 60 $F bench kernels --backend wgpu --shape llama2-7b --m 16,64,512 --ctx 128 > $OUT/kernels.txt 2>&1
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table"
echo "== 7B v4" >> $B; timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== 7B v3" >> $B; timeout 100 $V3 bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== SmolLM2 v4" >> $B; timeout 60 $F bench --shape smollm2-135m $W --repeats 3 --gen 8 --batch 1 >> $B 2>&1
echo "== SmolLM2 v3" >> $B; timeout 60 $V3 bench --shape smollm2-135m $W --repeats 3 --gen 8 --batch 1 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
timeout 100 $F bench --shape llama2-7b $W --repeats 1 --gen 4 --batch 1 --profile > $OUT/profile.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|done at|relative error" $OUT/tests.txt | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "C:gemm|online|total" $OUT/profile.txt
grep -E "^ +(16|64|512) |^[a-z_]+ \[" $OUT/kernels.txt
