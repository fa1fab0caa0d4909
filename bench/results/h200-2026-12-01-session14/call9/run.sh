#!/usr/bin/env bash
# Session 14, call 8 (record): every wgpu test (cooperative matrices required), fdpp check
# cpu,wgpu, 7B and SmolLM2 prefill 512 and decode at batch 1 and 8 (7B with the profile), 7B
# after a 4096-token prompt; llama.cpp CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 90 $T /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
P="Attention on cooperative matrices, checked against the CPU oracle node by node: one hundred and twenty bytes of prompt."
timeout 40 $F check --shape smollm2-135m --backends cpu,wgpu --prompt "$P" --steps 4 > $OUT/check.txt 2>&1; echo "check exit $? at $SECONDS s" >> $OUT/check.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
echo "== 7B prompt 512" >> $B; timeout 120 $F bench --shape llama2-7b $W --prompt 512 --repeats 2 --gen 32 --batch 1,8 --profile >> $B 2>&1
echo "== SmolLM2 prompt 512" >> $B; timeout 60 $F bench --shape smollm2-135m $W --prompt 512 --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
for i in $(seq 1 40); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "anchor done at $SECONDS s" >> $B
echo "== 7B prompt 4096" >> $B; timeout 90 $F bench --shape llama2-7b $W --prompt 4096 --repeats 1 --gen 32 --batch 1 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit" $OUT/tests.txt | head -8
tail -2 $OUT/check.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|C:gemm|B:flat|flash|rms_norm  |  total" $B
grep -E "pp512|tg128|^\|  +512" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
