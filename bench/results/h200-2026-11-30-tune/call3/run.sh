#!/usr/bin/env bash
# Session 4, call 3: issue 14 on the H200 -- tune SmolLM2's and Llama-2-7B's shapes with
# wgpu and with cuda, then decode with the built-in table and with the tuned profile in the
# same call (wgpu: the 128-token prompt of bench/results/h200.md; cuda: 512 as issue 11);
# llama.cpp CUDA built meanwhile and run last as the anchor.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
F="taskset -c 12-15 .device/bin/fdpp"
for s in smollm2-135m llama2-7b; do for b in wgpu cuda; do
  timeout 150 $F tune --backend $b --shape $s --json $OUT/tune-$b-$s.json > $OUT/tune-$b-$s.txt 2>&1; echo "exit $?" >> $OUT/tune-$b-$s.txt
done; done
W="--backend wgpu --prompt 128 --repeats 3 --batch 1,8"
C="--backend cuda --prompt 512 --repeats 3 --batch 1,8"
for t in --builtin-table ""; do
  timeout 40 $F bench --shape smollm2-135m $W --gen 128 $t >> $OUT/bench.txt 2>&1
  timeout 40 $F bench --shape smollm2-135m $C --gen 128 $t >> $OUT/bench.txt 2>&1
  timeout 60 $F bench --shape llama2-7b $W --gen 64 $t >> $OUT/bench.txt 2>&1
  timeout 60 $F bench --shape llama2-7b $C --gen 64 $t >> $OUT/bench.txt 2>&1
done
$F inspect --shape smollm2-135m --backend wgpu --m 1,8 > $OUT/inspect-wgpu.txt 2>&1
$F inspect --shape llama2-7b --backend cuda --m 1,8 > $OUT/inspect-cuda.txt 2>&1
$F tune --show --backend wgpu > $OUT/show-wgpu.txt 2>&1
for i in $(seq 1 20); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 100 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
cp -r $FDPP_CACHE/profiles $OUT/ 2>/dev/null
grep -E "^exit|tuned in|^tuned choice" $OUT/tune-*.txt; grep -E "^ +[0-9]+ +[0-9]|note|rror" $OUT/bench.txt; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -8
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log profiles inspect-*.txt show-wgpu.txt; rm -rf *.json lcpp-build.log profiles inspect-*.txt show-wgpu.txt; ls $OUT
