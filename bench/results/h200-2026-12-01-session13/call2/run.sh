#!/usr/bin/env bash
# Session 13, call B: gemm_matrix v2 (K steps of 64, the next step fetched into registers
# before this step's products) against v1 (ab_v1: steps of 32, no prefetch) and against the
# SIMT GEMM (FDPP_WGPU_COOPERATIVE_MATRIX=0), same call; tests; a 7B prefill profile; bench kernels.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/ab_v1.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/bin/fdpp; V1=/tmp/fd/ab_v1/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 200 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table"
for r in 1 2; do
  echo "== 7B v2 r$r" >> $B; timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
  echo "== 7B v1 r$r" >> $B; timeout 100 $V1 bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
done
echo "== 7B simt" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=0 timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== SmolLM2 v2" >> $B; timeout 60 $F bench --shape smollm2-135m $W --repeats 3 --gen 8 --batch 1 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
timeout 100 $F bench --shape llama2-7b $W --repeats 1 --gen 4 --batch 1 --profile > $OUT/profile.txt 2>&1
echo "profile done at $SECONDS s" >> $B
timeout 120 $F bench kernels --backend wgpu --shape llama2-7b --m 16,32,64,128,512 --ctx 512 > $OUT/kernels.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|done at|relative error" $OUT/tests.txt | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -v '^ *$' $OUT/profile.txt | tail -45
grep -E "^ +(16|64|512) |^[a-z_]+ \[" $OUT/kernels.txt
