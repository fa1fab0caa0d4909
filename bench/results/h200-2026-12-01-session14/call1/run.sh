#!/usr/bin/env bash
# Session 14, call 1 (was session 13 call H): the matrix attention with O in eight accumulators (call G's version
# loaded and stored O through workgroup memory as a C operand, and failed its test); the
# matrix tests (required), fdpp check cpu,wgpu on SmolLM2's shapes with a 119-token prompt,
# 7B (profile) and SmolLM2 prefill.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 60 /tmp/fd/bin/runtime-tests backend::wgpu::tests::matrix > $OUT/tests.txt 2>&1; FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 60 /tmp/fd/bin/runtime-tests backend::wgpu::tests::cooperative --nocapture >> $OUT/tests.txt 2>&1
P="Attention on cooperative matrices, checked against the CPU oracle node by node: one hundred and twenty bytes of prompt."
timeout 40 $F check --shape smollm2-135m --backends cpu,wgpu --prompt "$P" --steps 4 > $OUT/check.txt 2>&1; echo "check exit $? at $SECONDS s" >> $OUT/check.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table"
echo "== 7B matrix" >> $B; timeout 60 $F bench --shape llama2-7b $W --repeats 2 --gen 4 --batch 1 --profile >> $B 2>&1
echo "== SmolLM2 matrix" >> $B; timeout 30 $F bench --shape smollm2-135m $W --repeats 3 --gen 32 --batch 1 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|relative error|NaN" $OUT/tests.txt | head -10
tail -4 $OUT/check.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|  attention|C:gemm|  total" $B
