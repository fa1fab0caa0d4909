#!/usr/bin/env bash
# Session 12, call E (after D, same machine): CUDA decode on synthetic f16 weights (HEAD,
# with a3a7177's block GEMV); wgpu on the real SmolLM2-135M-Instruct Q4_1, --weights f16
# against --weights native, three interleaved rounds; greedy ids native vs cpu; fdpp check
# cpu,wgpu --weights native; llama.cpp CUDA in the same call.
set -u
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/fd/m0 .device/m1 > $M; sha256sum $M > $OUT/model.txt
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
T="taskset -c 12-15"; F="$T /tmp/fd/bin/fdpp"
C=$OUT/cuda.txt
S="--backend cuda --prompt 512 --repeats 3 --builtin-table"
echo "== cuda SmolLM2" >> $C; timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $C 2>&1
echo "== cuda 7B" >> $C; timeout 100 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 >> $C 2>&1
echo "== cuda 7B @4096" >> $C; timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 4096 >> $C 2>&1
echo "cuda done at $SECONDS s" >> $C
B=$OUT/bench.txt
W="--backend wgpu --prompt 512 --builtin-table --repeats 3 --model $M"
for r in 1 2 3; do
  for w in f16 native; do
    echo "== real SmolLM2 --weights $w r$r" >> $B; timeout 60 $F bench $W --weights $w --gen 128 --batch 1,8 >> $B 2>&1
  done
done
echo "bench done at $SECONDS s" >> $B
G=$OUT/greedy.txt
for p in "The capital of France is" "Write a haiku about the sea." "def fibonacci(n):"; do
  for w in cpu native; do
    if [ $w = cpu ]; then a="--backend cpu"; else a="--backend wgpu --weights native --kv f32"; fi
    echo "== $w: $p" >> $G; timeout 60 $F generate --model $M $a --temperature 0 --max-tokens 24 --json "$p" 2>>$OUT/greedy-stderr.txt | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['ids'])" >> $G
  done
done
timeout 120 $F check --model $M --backends cpu,wgpu --weights native --steps 8 > $OUT/check.txt 2>&1; echo "check exit $? at $SECONDS s" >> $OUT/check.txt
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "llama.cpp done at $SECONDS s" >> $B
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $C; grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at|weights on the device" $B; cat $G; tail -4 $OUT/check.txt
grep -E "t/s|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz lcpp-build.log greedy-stderr.txt && rm -f lcpp-build.log greedy-stderr.txt
