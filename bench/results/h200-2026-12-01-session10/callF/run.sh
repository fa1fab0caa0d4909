#!/usr/bin/env bash
# Session 10, call F: 5378cb6 (the per-warp GEMV for K <= 768, ca17086; the WGSL f16 KV
# cache, 9821312). CUDA unit tests; fdpp tune on SmolLM2's shapes with cuda; decode with the
# built-in table and the tuned profile; llama.cpp CUDA in the same call; wgpu (Vulkan)
# decode with --kv f32 and f16.
set -u
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles; mkdir -p $FDPP_CACHE
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
FDPP_REQUIRE_CUDA=1 timeout 100 $T .device/bin/runtime-tests cuda > $OUT/tests.txt 2>&1
echo "tests done at $SECONDS s" >> $OUT/tests.txt
timeout 90 $F tune --backend cuda --shape smollm2-135m --json $OUT/tune-cuda-smollm2-135m.json > $OUT/tune-cuda-smollm2-135m.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-cuda-smollm2-135m.txt
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 3"
echo "== cuda SmolLM2 built-in" >> $B; timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 --builtin-table >> $B 2>&1
echo "== cuda SmolLM2 tuned" >> $B; timeout 45 $F bench --shape smollm2-135m $S --gen 128 --batch 1,8 >> $B 2>&1
echo "== cuda 7B built-in" >> $B; timeout 100 $F bench --shape llama2-7b $S --gen 64 --batch 1,8 --builtin-table >> $B 2>&1
echo "== cuda 7B @4096 built-in" >> $B; timeout 60 $F bench --shape llama2-7b $S --gen 64 --batch 1 --ctx 4096 --builtin-table >> $B 2>&1
echo "cuda done at $SECONDS s" >> $B
for i in $(seq 1 60); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 150 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
echo "llama.cpp done at $SECONDS s" >> $B
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
W="--backend wgpu --prompt 512 --builtin-table"
for kv in f32 f16; do
  echo "== wgpu SmolLM2 --kv $kv" >> $B; timeout 40 .device/bin/fdpp bench --shape smollm2-135m $W --kv $kv --gen 128 --batch 1 --repeats 3 >> $B 2>&1
  echo "== wgpu 7B @4096 --kv $kv" >> $B; timeout 60 .device/bin/fdpp bench --shape llama2-7b $W --kv $kv --gen 32 --batch 1 --ctx 4096 --repeats 1 >> $B 2>&1
done
echo "all done at $SECONDS s" >> $B
grep -E "test result|FAILED|panicked|done at" $OUT/tests.txt; grep -hE "^tuned choice|^exit|within" $OUT/tune-*.txt | head -5
grep -E "^==|^ +[0-9]+ +[0-9]|rror|done at" $B; grep -E "t/s|^\|  +512|^\|  +4096" $OUT/llamacpp.txt | tail -14
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log && rm -f *.json lcpp-build.log; ls $OUT
