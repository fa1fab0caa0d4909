#!/usr/bin/env bash
# Call C3: model chunks 2 and 4; prefill of 512 tokens on both kernel sets.
set -u
cp .device/q1 /tmp/fd/q1; cp .device/q3 /tmp/fd/q3
export FDPP_CACHE=/tmp/fdppcache
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --gen 1 --repeats 3 --builtin-table --batch 1"
for k in tc simt; do for s in smollm2-135m llama2-7b; do
echo "== $k $s" >> $B; env FDPP_CUDA_TENSOR_CORES=$([ $k = tc ] && echo 1 || echo 0) timeout 100 /tmp/fd/bin/fdpp bench --shape $s $S >> $B 2>&1
done; done
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
