#!/usr/bin/env bash
# Session 13, call F: gemm_matrix_direct (f16 weights read as they lie, only x staged) against
# the staged gemm_matrix (FDPP_WGPU_MATRIX_DIRECT=0) and the SIMT GEMM
# (FDPP_WGPU_COOPERATIVE_MATRIX=0), same binary, same call; the wgpu tests; bench kernels;
# prefill profile; SmolLM2 and 7B decode; llama.cpp CUDA built and run in the same call.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 200 $T /tmp/fd/bin/runtime-tests backend::wgpu > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
timeout 60 $F bench kernels --backend wgpu --shape llama2-7b --m 16,32,64,128,512 --ctx 128 > $OUT/kernels.txt 2>&1
echo "kernels done at $SECONDS s" >> $OUT/kernels.txt
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table"
echo "== 7B direct" >> $B; timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 32 --batch 1,8 >> $B 2>&1
echo "== 7B staged" >> $B; FDPP_WGPU_MATRIX_DIRECT=0 timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== 7B simt" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=0 timeout 100 $F bench --shape llama2-7b $W --repeats 3 --gen 4 --batch 1 >> $B 2>&1
echo "== SmolLM2 direct" >> $B; timeout 60 $F bench --shape smollm2-135m $W --repeats 3 --gen 128 --batch 1,8 >> $B 2>&1
echo "== SmolLM2 simt" >> $B; FDPP_WGPU_COOPERATIVE_MATRIX=0 timeout 60 $F bench --shape smollm2-135m $W --repeats 3 --gen 8 --batch 1 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
timeout 100 $F bench --shape llama2-7b $W --repeats 1 --gen 4 --batch 1 --profile > $OUT/profile.txt 2>&1
echo "profile done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|skipped|done at|relative error" $OUT/tests.txt | head -20
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "C:gemm|online|total" $OUT/profile.txt
grep -E "^ +(16|64|512) |^[a-z_]+ \[" $OUT/kernels.txt
grep -E "t/s|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
