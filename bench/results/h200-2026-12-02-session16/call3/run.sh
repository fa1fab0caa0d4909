#!/usr/bin/env bash
# Session 16, call 3: attn_single (one workgroup per (token, head) up to 1024 keys) and split-KV
# chunks aimed at 1024 workgroups, the new defaults, against the knobs that turn them off
# (FDPP_WGPU_ATTN_SINGLE=0; FDPP_WGPU_ATTN_BLOCKS=0 / 2048), same binary, same call; the wgpu
# tests; bench kernels; llama.cpp CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 100 $T /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
timeout 100 $F bench kernels --shape llama2-7b --backend wgpu --m 1 --ctx 512,1024,2048,4096 --json $OUT/k7b.json > $OUT/k7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/k7b.txt
timeout 40 $F bench kernels --shape smollm2-135m --backend wgpu --m 1 --ctx 512,1024,2048 > $OUT/ksm.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/ksm.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
S="--shape smollm2-135m $W --prompt 512 --repeats 3 --gen 64 --batch 1,8"
echo "== SmolLM2 default" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "== SmolLM2 ATTN_SINGLE=0" >> $B; FDPP_WGPU_ATTN_SINGLE=0 timeout 40 $F bench $S >> $B 2>&1
L="--shape llama2-7b $W --prompt 512 --repeats 2 --gen 16"
echo "== 7B default" >> $B; timeout 120 $F bench $L --ctx 512,4096 --batch 1,8 --profile >> $B 2>&1
echo "== 7B ATTN_SINGLE=0" >> $B; FDPP_WGPU_ATTN_SINGLE=0 timeout 60 $F bench $L --ctx 512 --batch 1,8 >> $B 2>&1
echo "== 7B ATTN_BLOCKS=2048" >> $B; FDPP_WGPU_ATTN_BLOCKS=2048 timeout 80 $F bench $L --ctx 4096 --batch 1,8 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit" $OUT/tests.txt | head -8
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|A:gemv|B:flat|split-KV|  total" $B
grep -E "^ +(512|1024|2048|4096) |at (512|1024|2048|4096)|^ +1 " $OUT/k7b.txt $OUT/ksm.txt
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
