#!/usr/bin/env bash
# Call E3 of 3: the model put together. cuda_model (SmolLM2 against the CPU) with and
# without the tensor-core kernels; greedy tokens of the reference and five unseen prompts on
# every backend and weight / KV setting against Hugging Face transformers (float32, CPU,
# from the same GGUF) in the same call.
set -u
export FDPP_CACHE=/tmp/fdppcache VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
M=$FDPP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
cat /tmp/fd/q0 /tmp/fd/q1 .device/q2 /tmp/fd/q3 > $M; sha256sum $M > $OUT/model.txt
mkdir -p /work/main/target/release && ln -sf /tmp/fd/bin/fdpp /work/main/target/release/fdpp
D=bench/results/h200-2026-12-01-session11/callE
(timeout 300 python3 bench/peers/hf_greedy.py --model $M < $D/prompts.jsonl > $OUT/hf.jsonl 2> $OUT/hf.err &)
T=$OUT/tests.txt
echo "== default" > $T; FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 150 /tmp/fd/bin/cuda_model --test-threads 1 >> $T 2>&1
echo "== simt" >> $T; FDPP_CUDA_TENSOR_CORES=0 FDPP_REQUIRE_CUDA=1 FDPP_REQUIRE_MODEL=1 timeout 150 /tmp/fd/bin/cuda_model --test-threads 1 >> $T 2>&1
G=$OUT/fdpp.jsonl; : > $G
gen() { # name, env, args...
  local name=$1 envs=$2; shift 2
  while read -r line; do
    p=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prompt"])' "$line")
    chat=$(python3 -c 'import json,sys; print("--chat" if json.loads(sys.argv[1])["chat"] else "")' "$line")
    env $envs timeout 60 /tmp/fd/bin/fdpp generate --temperature 0 --max-tokens 24 --json --model $M $chat "$@" "$p" 2>>$OUT/gen.err \
      | python3 -c 'import json,sys; r=json.load(sys.stdin); r["backend"]=sys.argv[1]; r["prompt"]=sys.argv[2]; r["chat"]=sys.argv[3]=="1"; print(json.dumps(r))' "$name" "$p" "$([ -n "$chat" ] && echo 1 || echo 0)" >> $G
  done < $D/prompts.jsonl
}
gen cpu X=1 --backend cpu
gen "wgpu (default: f16, kv f16)" X=1 --backend wgpu
gen "wgpu f16, kv f32" X=1 --backend wgpu --kv f32
gen "wgpu f32" X=1 --backend wgpu --weights f32 --kv f32
gen "cuda (default: f16)" X=1 --backend cuda
gen "cuda f32" X=1 --backend cuda --weights f32
gen "cuda f16, no tensor cores" FDPP_CUDA_TENSOR_CORES=0 --backend cuda
for i in $(seq 1 60); do [ $(wc -l < $OUT/hf.jsonl) -ge 7 ] && break; sleep 2; done
python3 bench/peers/compare_greedy.py $OUT/hf.jsonl $G > $OUT/compare.txt 2>&1; echo "compare exit $?" >> $OUT/compare.txt
grep -E "^==|test result|FAILED|panicked" $T; cat $OUT/compare.txt; tail -3 $OUT/hf.err
