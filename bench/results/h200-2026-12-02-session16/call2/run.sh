#!/usr/bin/env bash
# Session 16, call 2 (c1f9aa1): the WGSL attn_combine with all of a
# lane's sums in one loop; split-KV chunking rule (FDPP_WGPU_ATTN_BLOCKS) and the GEMV's norm
# prologue (FDPP_WGPU_NORM_PROLOGUE=0) measured by knobs in one binary; B's new K-split
# tilings (8x16 K/4, 8x8 K/8) in bench kernels; every chunk length in bench kernels.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 100 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
timeout 120 $F bench kernels --shape llama2-7b --backend wgpu --m 8 --ctx 512,4096 --json $OUT/k7b.json > $OUT/k7b.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/k7b.txt
timeout 30 $F bench kernels --shape smollm2-135m --backend wgpu --m 8 --ctx 512 > $OUT/ksm.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/ksm.txt
B=$OUT/bench.txt
W="--backend wgpu --builtin-table"
S="--shape smollm2-135m $W --prompt 512 --repeats 3 --gen 64 --batch 1,8"
echo "== SmolLM2 default" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "== SmolLM2 ATTN_BLOCKS=1024" >> $B; FDPP_WGPU_ATTN_BLOCKS=1024 timeout 40 $F bench $S >> $B 2>&1
echo "== SmolLM2 ATTN_BLOCKS=512" >> $B; FDPP_WGPU_ATTN_BLOCKS=512 timeout 40 $F bench $S >> $B 2>&1
echo "== SmolLM2 NORM_PROLOGUE=0" >> $B; FDPP_WGPU_NORM_PROLOGUE=0 timeout 40 $F bench $S >> $B 2>&1
L="--shape llama2-7b $W --prompt 512 --repeats 2 --gen 16"
echo "== 7B default" >> $B; timeout 120 $F bench $L --ctx 512,4096 --batch 1,8 --profile >> $B 2>&1
echo "== 7B ATTN_BLOCKS=1024" >> $B; FDPP_WGPU_ATTN_BLOCKS=1024 timeout 100 $F bench $L --ctx 512,4096 --batch 1,8 >> $B 2>&1
echo "== 7B NORM_PROLOGUE=0" >> $B; FDPP_WGPU_NORM_PROLOGUE=0 timeout 60 $F bench $L --ctx 512 --batch 1 >> $B 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|exit" $OUT/tests.txt | head -8
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|A:gemv|B:flat|split-KV|  total" $B
grep -E "B at M = 8|^[a-z_]+ \[|^ +(512|4096) |at (512|4096)" $OUT/k7b.txt $OUT/ksm.txt
