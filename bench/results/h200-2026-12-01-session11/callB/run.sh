#!/usr/bin/env bash
# Session 11, call B (31920b1): the kernel set the HIP backend runs (no tensor-core kernels:
# FDPP_CUDA_TENSOR_CORES=0), on the H200: CUDA kernel tests, tiny models against the CPU
# (cuda_model), fdpp check on synthetic SmolLM2 and 7B shapes, and decode / prefill speed
# beside the full CUDA backend.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
X=".device/bin/fdpp"
T=$OUT/tests.txt
echo "== default" > $T; FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda >> $T 2>&1
echo "== simt" >> $T; FDPP_CUDA_TENSOR_CORES=0 FDPP_REQUIRE_CUDA=1 timeout 120 .device/bin/runtime-tests cuda --nocapture >> $T 2>&1
echo "== simt cuda_model" >> $T; FDPP_CUDA_TENSOR_CORES=0 FDPP_REQUIRE_CUDA=1 timeout 200 .device/bin/cuda_model --test-threads 1 >> $T 2>&1
C=$OUT/check.txt
for shape in smollm2-135m llama2-7b; do for w in f16 f32; do
echo "== simt check $shape $w" >> $C; FDPP_CUDA_TENSOR_CORES=0 timeout 100 $X check --shape $shape --backends cpu,cuda --weights $w --steps 4 >> $C 2>&1; echo "exit $?" >> $C
done; done
echo "== simt inspect" >> $C; FDPP_CUDA_TENSOR_CORES=0 timeout 30 $X inspect --shape llama2-7b --backend cuda --m 1,8,64 --prefill 2>&1 | head -60 >> $C
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
run() { echo "== $1" >> $B; shift; timeout 100 "$@" >> $B 2>&1; }
run "tc smollm2" $X bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "simt smollm2" env FDPP_CUDA_TENSOR_CORES=0 $X bench --shape smollm2-135m $S --gen 128 --batch 1,8 --profile
run "tc 7b" $X bench --shape llama2-7b $S --gen 32 --batch 1,8
run "simt 7b" env FDPP_CUDA_TENSOR_CORES=0 $X bench --shape llama2-7b $S --gen 32 --batch 1,8 --profile
echo "done at $SECONDS s" >> $B
grep -E "^==|test result|FAILED|panicked|skipped" $T
grep -E "^==|^exit|first|agree|diverg|within|beyond" $C | head -40
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
