#!/usr/bin/env bash
# Session 13, call G: the prefill attention on cooperative matrices (attention_matrix.wgsl)
# with gemm_matrix_direct; the wgpu tests (both matrix tests required); fdpp check cpu,wgpu
# on SmolLM2's shapes with a 120-token prompt (C and the matrix attention in the prefill);
# 7B and SmolLM2 prefill against FDPP_WGPU_COOPERATIVE_MATRIX=0, same call; a 7B profile.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 120 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
P="Attention on cooperative matrices, checked against the CPU oracle node by node: one hundred and twenty bytes of prompt."
timeout 60 $F check --shape smollm2-135m --backends cpu,wgpu --prompt "$P" --steps 4 > $OUT/check.txt 2>&1; echo "check exit $? at $SECONDS s" >> $OUT/check.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table"
echo "== 7B matrix" >> $B; timeout 80 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 --profile >> $B 2>&1
echo "== 7B simt" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=0 timeout 80 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== SmolLM2 matrix" >> $B; timeout 40 $F bench --shape smollm2-135m $W --repeats 3 --gen 32 --batch 1 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|done at|relative error" $OUT/tests.txt | head -20
tail -5 $OUT/check.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|  attention|C:gemm|  total" $B
