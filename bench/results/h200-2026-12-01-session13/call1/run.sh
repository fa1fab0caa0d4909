#!/usr/bin/env bash
# Session 13, call A: the WGSL GEMM on cooperative matrices (gemm_matrix.wgsl) on the H200's
# Vulkan: the wgpu kernel tests with FDPP_REQUIRE_COOPERATIVE_MATRIX=1, prefill with and
# without the matrix kernel (FDPP_WGPU_COOPERATIVE_MATRIX=0) in the same call, a 7B prefill
# profile, and bench kernels on Llama-2-7B's shapes for the B/C crossover.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
F=/tmp/fd/bin/fdpp
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 200 /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3"
for r in 1 2; do
  for c in 1 0; do
    echo "== SmolLM2 matrix=$c r$r" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=$c timeout 60 $F bench --shape smollm2-135m $W --gen 32 --batch 1 >> $B 2>&1
  done
done
for c in 1 0; do
  echo "== 7B matrix=$c" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=$c timeout 120 $F bench --shape llama2-7b $W --gen 16 --batch 1 >> $B 2>&1
done
echo "bench done at $SECONDS s" >> $B
timeout 100 $F bench --shape llama2-7b $W --gen 8 --batch 1 --profile --repeats 1 > $OUT/profile.txt 2>&1
echo "profile done at $SECONDS s" >> $B
timeout 150 $F bench kernels --backend wgpu --shape llama2-7b --m 8,16,24,32,48,64,128,512 --ctx 512 > $OUT/kernels.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|done at|relative error" $OUT/tests.txt | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|cooperative" $B
grep -E "^ *C|gemm|prefill" $OUT/profile.txt | head -20
tail -40 $OUT/kernels.txt
