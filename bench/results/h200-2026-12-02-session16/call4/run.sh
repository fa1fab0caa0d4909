#!/usr/bin/env bash
# Session 16, call 4 (record): HEAD (attn_combine with all of a lane's sums in one written-out
# walk; split-KV chunks aimed at 1024 workgroups; no one-chunk rule) against call 3's binary
# with FDPP_WGPU_ATTN_SINGLE=0 (the same rule, the old combine), same call; 7B prefill of
# d4a70ba (session 14's 3089.5 tok/s) against HEAD; the wgpu tests; bench kernels; llama.cpp
# CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd /tmp/c3 /tmp/d4 && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/c3.tar.xz -C /tmp/c3 && tar xJf .device/d4.tar.xz -C /tmp/d4
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"; F3="$T /tmp/c3/bin/fdpp"; F4="$T /tmp/d4/bin/fdpp"
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 80 $T /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
timeout 60 $F bench kernels --shape llama2-7b --backend wgpu --m 1 --ctx 512,4096 > $OUT/k7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/k7b.txt
timeout 25 $F bench kernels --shape smollm2-135m --backend wgpu --m 1 --ctx 512 > $OUT/ksm.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/ksm.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
S="--shape smollm2-135m $W --prompt 512 --repeats 3 --gen 64 --batch 1,8"
echo "== HEAD SmolLM2" >> $B; timeout 30 $F bench $S >> $B 2>&1
echo "== c3 SmolLM2 ATTN_SINGLE=0" >> $B; FDPP_WGPU_ATTN_SINGLE=0 timeout 30 $F3 bench $S >> $B 2>&1
L="--shape llama2-7b $W --prompt 512 --repeats 2 --gen 16 --batch 1,8"
echo "== HEAD 7B" >> $B; timeout 60 $F bench $L >> $B 2>&1
echo "== c3 7B ATTN_SINGLE=0" >> $B; FDPP_WGPU_ATTN_SINGLE=0 timeout 60 $F3 bench $L >> $B 2>&1
P="--shape llama2-7b $W --prompt 512 --repeats 3 --gen 2 --batch 1"
echo "== d4a70ba 7B prefill" >> $B; timeout 40 $F4 bench $P >> $B 2>&1
echo "== HEAD 7B prefill" >> $B; timeout 40 $F bench $P >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
for i in $(seq 1 50); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 100 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit" $OUT/tests.txt | head -8
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "^ +(512|4096) |at (512|4096)" $OUT/k7b.txt $OUT/ksm.txt
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
