#!/usr/bin/env bash
# Session 17, call 2: CUDA, split-KV attention with two batches of 2 keys per lane group in
# registers (FDPP_CUDA_ATTN_SPLIT=p2), the GEMV / flat GEMM loading their first weights into
# registers before the PDL wait (FDPP_CUDA_DEFINES=PRELOAD_WEIGHTS=1), one-chunk attention
# variants (FDPP_CUDA_ATTN_SINGLE=8w_p2 / 8w / p2), split-KV blocks per SM aimed at
# (FDPP_CUDA_ATTN_BLOCKS_PER_SM); against 5ad8714's binary (base) on SmolLM2; the CUDA tests
# with and without the preload; a per-node profile.
set -u
mkdir -p /tmp/fd /tmp/base && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/base.tar.xz -C /tmp/base
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 4-15"; F="$T /tmp/fd/bin/fdpp"; FB="$T /tmp/base/bin/fdpp"; RT="$T /tmp/fd/bin/runtime-tests"
X=$OUT/tests.txt
echo "== preload 0, split p2" >> $X; FDPP_CUDA_ATTN_SPLIT=p2 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $RT backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
echo "== preload 1" >> $X; FDPP_CUDA_DEFINES=PRELOAD_WEIGHTS=1 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $RT backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
for v in 8w p2; do echo "== single $v" >> $X; FDPP_CUDA_ATTN_SINGLE=$v FDPP_REQUIRE_CUDA=1 timeout 40 $RT backend::cuda::tests::attention_kernels_match_the_reference_f16 >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X; done
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
P1=PRELOAD_WEIGHTS=1
export FDPP_CUDA_ATTN_SPLIT=p2
echo "== base SmolLM2" >> $B; FDPP_CUDA_ATTN_SPLIT= timeout 40 $FB bench $S >> $B 2>&1
echo "== p2 SmolLM2" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "== p2 preload SmolLM2" >> $B; FDPP_CUDA_DEFINES=$P1 timeout 40 $F bench $S >> $B 2>&1
echo "== p2 preload SmolLM2 single p2" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_SINGLE=p2 timeout 30 $F bench $S >> $B 2>&1
echo "== p2 preload SmolLM2 single 8w" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_SINGLE=8w timeout 30 $F bench $S >> $B 2>&1
echo "== base SmolLM2 again" >> $B; FDPP_CUDA_ATTN_SPLIT= timeout 40 $FB bench $S >> $B 2>&1
echo "smollm2 done at $SECONDS s" >> $B
L="--shape llama2-7b $C --repeats 2 --gen 32"
echo "== p2 7B" >> $B; timeout 70 $F bench $L --batch 1,8 --ctx 512,4096 >> $B 2>&1
echo "== p2 preload 7B" >> $B; FDPP_CUDA_DEFINES=$P1 timeout 70 $F bench $L --batch 1,8 --ctx 512,4096 >> $B 2>&1
echo "== p2 preload 7B single 8w_p2" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_SINGLE=8w_p2 timeout 60 $F bench $L --batch 8 >> $B 2>&1
echo "== p2 preload 7B single 8w" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_SINGLE=8w timeout 60 $F bench $L --batch 8 >> $B 2>&1
echo "== p2 preload 7B blocks/SM 5" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_BLOCKS_PER_SM=5 timeout 60 $F bench $L --batch 1 --ctx 4096 >> $B 2>&1
echo "== p2 preload 7B blocks/SM 8" >> $B; FDPP_CUDA_DEFINES=$P1 FDPP_CUDA_ATTN_BLOCKS_PER_SM=8 timeout 60 $F bench $L --batch 1 --ctx 4096 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
FDPP_CUDA_DEFINES=$P1 timeout 70 $F bench $L --batch 1,8 --gen 8 --repeats 1 --profile > $OUT/profile.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "^==|test result|FAILED|panicked|exit" $X | head -30
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "decode|linear|attention" $OUT/profile.txt | head -20
