#!/usr/bin/env bash
# Session 14, call 4: the matrix attention with its scalar declared first: every wgpu test
# (parallel, cooperative matrices required), fdpp check cpu,wgpu (119-token prefill), 7B
# prefill (profile), 7B after a 4096-token prompt, SmolLM2 prefill and decode.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 200 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
P="Attention on cooperative matrices, checked against the CPU oracle node by node: one hundred and twenty bytes of prompt."
timeout 60 $F check --shape smollm2-135m --backends cpu,wgpu --prompt "$P" --steps 4 > $OUT/check.txt 2>&1; echo "check exit $? at $SECONDS s" >> $OUT/check.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
echo "== 7B prefill 512 profile" >> $B; timeout 60 $F bench --shape llama2-7b $W --prompt 512 --repeats 3 --gen 4 --batch 1 --profile >> $B 2>&1
echo "== 7B prompt 4096" >> $B; timeout 120 $F bench --shape llama2-7b $W --prompt 4096 --repeats 2 --gen 32 --batch 1 >> $B 2>&1
echo "== SmolLM2" >> $B; timeout 60 $F bench --shape smollm2-135m $W --prompt 512 --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|exit|relative error" $OUT/tests.txt | head -20
tail -3 $OUT/check.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|  attention|C:gemm|  total" $B
