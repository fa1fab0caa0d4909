#!/usr/bin/env bash
# Session 8, call B: attn_single (one block per (token, head) up to SINGLE_MAX_KEYS keys, no
# combine launch) against split + combine: n = this build (single up to 1024 keys),
# n0 = the same with FDPP_CUDA_SINGLE_MAX_KEYS=0 (split + combine everywhere), n512 = up to
# 512 keys, a = 5db5273. CUDA unit tests, fdpp check on SmolLM2's shapes (cpu vs cuda, f16
# and f32), decode A/B, attention kernels; llama.cpp CUDA in the same call.
set -u
tar xJf .device/bin.tar.xz -C .device; tar xJf .device/ab.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
N="$T .device/bin/fdpp"; A="$T .device/ab/fdpp-s8a"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
for w in f16 f32; do timeout 60 $N check --shape smollm2-135m --backends cpu,cuda --weights $w --steps 24 >> $OUT/check.txt 2>&1; echo "exit $? ($w)" >> $OUT/check.txt; done
echo "tests done at $SECONDS s" >> $OUT/tests.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
timeout 40 $A bench --shape smollm2-135m $S --gen 8 > /dev/null 2>&1 # compile a's kernels
run() { echo "== $1" >> $B; shift; timeout 60 "$@" >> $B 2>&1; }
for i in 1 2; do
  run "n smollm2" $N bench --shape smollm2-135m $S --gen 128 --batch 1,8
  run "n0 smollm2" env FDPP_CUDA_SINGLE_MAX_KEYS=0 $N bench --shape smollm2-135m $S --gen 128 --batch 1,8
done
run "n512 smollm2" env FDPP_CUDA_SINGLE_MAX_KEYS=512 $N bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "a smollm2" $A bench --shape smollm2-135m $S --gen 128 --batch 1,8
run "n smollm2 ctx 1000" $N bench --shape smollm2-135m $S --gen 24 --ctx 1000 --batch 1,8
run "n0 smollm2 ctx 1000" env FDPP_CUDA_SINGLE_MAX_KEYS=0 $N bench --shape smollm2-135m $S --gen 24 --ctx 1000 --batch 1,8
run "n 7b" $N bench --shape llama2-7b $S --gen 32 --batch 1,8
run "n0 7b" env FDPP_CUDA_SINGLE_MAX_KEYS=0 $N bench --shape llama2-7b $S --gen 32 --batch 1,8
run "n 7b ctx 1000" $N bench --shape llama2-7b $S --gen 24 --ctx 1000 --batch 1
run "n0 7b ctx 1000" env FDPP_CUDA_SINGLE_MAX_KEYS=0 $N bench --shape llama2-7b $S --gen 24 --ctx 1000 --batch 1
echo "benches done at $SECONDS s" >> $B
for s in smollm2-135m llama2-7b; do
  timeout 40 $N bench kernels --backend cuda --shape $s --m 1 --ctx 256,512,1024 > $OUT/kernels-n-$s.txt 2>&1
  FDPP_CUDA_SINGLE_MAX_KEYS=0 timeout 40 $N bench kernels --backend cuda --shape $s --m 1 --ctx 256,512,1024 > $OUT/kernels-n0-$s.txt 2>&1
done
echo "kernels done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -E "exit|agree|differ|first" $OUT/check.txt | head
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B; grep -hE "attention|^ +[0-9]+ +[0-9.]+ +[0-9]" $OUT/kernels-*.txt | head -30
grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -14
rm -f $OUT/lcpp-build.log; ls $OUT
