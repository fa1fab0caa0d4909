#!/usr/bin/env bash
# Session 16, call 1: session 15's unmeasured WGSL changes (attn_split in lane groups with
# 16-byte K/V loads, B's default tiling 8x16 K over 2) at a33acd8 against 0c973d8 (base) in
# the same call; the wgpu tests (the 32-lane group_sum4 on a GPU for the first time); bench
# kernels; CUDA 7B for reference; llama.cpp CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd /tmp/base && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/base.tar.xz -C /tmp/base
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"; FB="$T /tmp/base/bin/fdpp"
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 120 $T /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
echo "== HEAD 7B prompt 512" >> $B; timeout 120 $F bench --shape llama2-7b $W --prompt 512 --repeats 2 --gen 32 --batch 1,8 --profile >> $B 2>&1
echo "== base 7B prompt 512" >> $B; timeout 100 $FB bench --shape llama2-7b $W --prompt 512 --repeats 2 --gen 32 --batch 1,8 >> $B 2>&1
echo "== HEAD SmolLM2 prompt 512" >> $B; timeout 60 $F bench --shape smollm2-135m $W --prompt 512 --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
echo "== base SmolLM2 prompt 512" >> $B; timeout 60 $FB bench --shape smollm2-135m $W --prompt 512 --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
echo "== HEAD 7B prompt 4096" >> $B; timeout 90 $F bench --shape llama2-7b $W --prompt 4096 --repeats 1 --gen 32 --batch 1 >> $B 2>&1
echo "== base 7B prompt 4096" >> $B; timeout 90 $FB bench --shape llama2-7b $W --prompt 4096 --repeats 1 --gen 32 --batch 1 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
timeout 150 $F bench kernels --shape llama2-7b --backend wgpu --m 1,8,16 --ctx 512,4096 --json $OUT/k7b.json > $OUT/k7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/k7b.txt
echo "== HEAD cuda 7B prompt 512" >> $B; timeout 90 $F bench --shape llama2-7b --backend cuda --builtin-table --prompt 512 --repeats 2 --gen 32 --batch 1,8 >> $B 2>&1
echo "cuda done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit" $OUT/tests.txt | head -8
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|A:gemv|B:flat|split-KV|  total" $B
grep -E "attn|^ +(1|8) |^[a-z_]+ \[" $OUT/k7b.txt | head -60
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
