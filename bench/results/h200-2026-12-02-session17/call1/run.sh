#!/usr/bin/env bash
# Session 17, call 1: CUDA decode attention variants (issue 11), one binary with knobs,
# against 5ad8714's binary (base; same CUDA code as HEAD 74c1666), same call; the CUDA
# tests under every variant; llama.cpp CUDA built and run in the same call.
#   FDPP_CUDA_ATTN_SPLIT = "" (attn_split: batches of 4 keys per lane group, one at a time)
#                          p4 / p2 (two batches of 4 / 2 in registers: the next one loads
#                          while this one is summed)
#   FDPP_CUDA_ATTN_SINGLE = "" (16 warps, batch 4) / p4 (16 warps, pipelined 4) /
#                          8w_p4 / 8w_p2 (8 warps, pipelined) / b8 (16 warps, one batch of 8)
#   FDPP_CUDA_SINGLE_MIN_PAIRS=1: one chunk per pair whatever the pair count (SmolLM2 b1).
set -u
mkdir -p /tmp/fd /tmp/base && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/base.tar.xz -C /tmp/base
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"; FB="$T /tmp/base/bin/fdpp"; RT="$T /tmp/fd/bin/runtime-tests"
X=$OUT/tests.txt
echo "== default" >> $X; FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_GPU=1 timeout 150 $RT backend::cuda >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X
for v in p4 p2; do echo "== split $v" >> $X; FDPP_CUDA_ATTN_SPLIT=$v FDPP_REQUIRE_CUDA=1 timeout 40 $RT backend::cuda::tests::attention_kernels_match_the_reference_f16 >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X; done
for v in p4 8w_p4 8w_p2 b8; do echo "== single $v" >> $X; FDPP_CUDA_ATTN_SINGLE=$v FDPP_REQUIRE_CUDA=1 timeout 40 $RT backend::cuda::tests::attention_kernels_match_the_reference_f16 >> $X 2>&1; echo "exit $? at $SECONDS s" >> $X; done
B=$OUT/bench.txt
C="--backend cuda --builtin-table --prompt 512"
S="--shape smollm2-135m $C --repeats 3 --gen 32 --batch 1,8"
echo "== base SmolLM2" >> $B; timeout 40 $FB bench $S >> $B 2>&1
echo "== new SmolLM2" >> $B; timeout 40 $F bench $S >> $B 2>&1
echo "== new SmolLM2 split p2 single 8w_p2" >> $B; FDPP_CUDA_ATTN_SPLIT=p2 FDPP_CUDA_ATTN_SINGLE=8w_p2 timeout 30 $F bench $S >> $B 2>&1
echo "== new SmolLM2 split p4 single 8w_p4" >> $B; FDPP_CUDA_ATTN_SPLIT=p4 FDPP_CUDA_ATTN_SINGLE=8w_p4 timeout 30 $F bench $S >> $B 2>&1
echo "== new SmolLM2 all single (min pairs 1)" >> $B; FDPP_CUDA_SINGLE_MIN_PAIRS=1 timeout 30 $F bench $S >> $B 2>&1
echo "== new SmolLM2 all single b8" >> $B; FDPP_CUDA_SINGLE_MIN_PAIRS=1 FDPP_CUDA_ATTN_SINGLE=b8 timeout 30 $F bench $S >> $B 2>&1
echo "== new SmolLM2 all single p4" >> $B; FDPP_CUDA_SINGLE_MIN_PAIRS=1 FDPP_CUDA_ATTN_SINGLE=p4 timeout 30 $F bench $S >> $B 2>&1
echo "smollm2 done at $SECONDS s" >> $B
L="--shape llama2-7b $C --repeats 2 --gen 32 --batch 1,8 --ctx 512,4096"
echo "== base 7B" >> $B; timeout 70 $FB bench $L >> $B 2>&1
echo "== new 7B" >> $B; timeout 70 $F bench $L >> $B 2>&1
echo "== new 7B split p2 single 8w_p2" >> $B; FDPP_CUDA_ATTN_SPLIT=p2 FDPP_CUDA_ATTN_SINGLE=8w_p2 timeout 70 $F bench $L >> $B 2>&1
echo "== new 7B split p4 single 8w_p4" >> $B; FDPP_CUDA_ATTN_SPLIT=p4 FDPP_CUDA_ATTN_SINGLE=8w_p4 timeout 70 $F bench $L >> $B 2>&1
echo "== new 7B single p4" >> $B; FDPP_CUDA_ATTN_SINGLE=p4 timeout 70 $F bench --shape llama2-7b $C --repeats 2 --gen 32 --batch 8 >> $B 2>&1
echo "bench done at $SECONDS s" >> $B
for i in $(seq 1 50); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 100 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "^==|test result|FAILED|panicked|exit" $X | head -30
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B
grep -E "pp512|tg128|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log && rm -f lcpp-build.log
