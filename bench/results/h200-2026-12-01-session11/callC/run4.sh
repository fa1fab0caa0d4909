#!/usr/bin/env bash
# Call C4: model chunk 3, the model put together; SmolLM2-135M (the default model) whole: cuda_model against
# the CPU with and without the tensor-core kernels, fdpp check both weight types, auto.
set -u
export FDPP_CACHE=/tmp/fdppcache
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/fd/q0 /tmp/fd/q1 .device/q2 /tmp/fd/q3 > $M; sha256sum $M > $OUT/model.txt
mkdir -p /work/main/target/release && ln -sf /tmp/fd/bin/fdpp /work/main/target/release/fdpp
T=$OUT/tests.txt
echo "== default" > $T; FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 200 /tmp/fd/bin/cuda_model --test-threads 1 >> $T 2>&1
echo "== simt" >> $T; FDPP_CUDA_TENSOR_CORES=0 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 200 /tmp/fd/bin/cuda_model --test-threads 1 >> $T 2>&1
C=$OUT/check.txt
for k in 1 0; do for w in f16 f32; do
echo "== tensor cores $k check $w" >> $C; FDPP_CUDA_TENSOR_CORES=$k timeout 100 /tmp/fd/bin/fdpp check --model $M --backends cpu,cuda --weights $w --steps 8 >> $C 2>&1; echo "exit $?" >> $C
done; done
/tmp/fd/bin/fdpp generate --backend auto --temperature 0 --max-tokens 16 --model $M "The capital of France is" > $OUT/auto.txt 2>&1
/tmp/fd/bin/fdpp generate --backend hip --max-tokens 2 --model $M "hi" >> $OUT/auto.txt 2>&1; echo "hip exit $?" >> $OUT/auto.txt
grep -E "^==|test result|FAILED|panicked" $T; grep -E "^==|^exit|PASS|FAIL|greedy" $C; tail -4 $OUT/auto.txt
