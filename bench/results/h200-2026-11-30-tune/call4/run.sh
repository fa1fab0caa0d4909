#!/usr/bin/env bash
# Session 4, call 4: issue 14 on the H200 -- tune with cuda (SmolLM2, Llama-2-7B) and
# decode with the built-in table and the tuned profile; wgpu SmolLM2 again with the tuned
# run first (call 3 ran it second, and batch 1 was slower with identical launches);
# llama.cpp CUDA built meanwhile and run last as the anchor.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
(taskset -c 0-11 setsid bash .device/lcpp/llamacpp_anchor.sh build .device/lcpp > $OUT/lcpp-build.log 2>&1 &)
F="taskset -c 12-15 .device/bin/fdpp"
for s in smollm2-135m llama2-7b; do
  timeout 90 $F tune --backend cuda --shape $s --json $OUT/tune-cuda-$s.json > $OUT/tune-cuda-$s.txt 2>&1; echo "exit $?" >> $OUT/tune-cuda-$s.txt
done
timeout 90 $F tune --backend wgpu --shape smollm2-135m --json $OUT/tune-wgpu-smollm2-135m.json > $OUT/tune-wgpu-smollm2-135m.txt 2>&1; echo "exit $?" >> $OUT/tune-wgpu-smollm2-135m.txt
W="--backend wgpu --prompt 128 --repeats 3 --batch 1,8 --gen 128"
C="--backend cuda --prompt 512 --repeats 3 --batch 1,8"
for t in "" --builtin-table; do
  echo "== wgpu smollm2 $t" >> $OUT/bench.txt; timeout 40 $F bench --shape smollm2-135m $W $t >> $OUT/bench.txt 2>&1
done
for t in --builtin-table ""; do
  echo "== cuda smollm2 $t" >> $OUT/bench.txt; timeout 40 $F bench --shape smollm2-135m $C --gen 128 $t >> $OUT/bench.txt 2>&1
  echo "== cuda 7b $t" >> $OUT/bench.txt; timeout 60 $F bench --shape llama2-7b $C --gen 64 $t >> $OUT/bench.txt 2>&1
done
$F inspect --shape llama2-7b --backend cuda --m 1,8 > $OUT/inspect-cuda.txt 2>&1
for i in $(seq 1 20); do grep -q "llama.cpp built" $OUT/lcpp-build.log && break; sleep 5; done
timeout 100 bash .device/lcpp/llamacpp_anchor.sh bench .device/lcpp > $OUT/llamacpp.txt 2>&1
cp -r $FDPP_CACHE/profiles $OUT/ 2>/dev/null
grep -E "^exit|tuned in|^tuned choice|panick" $OUT/tune-*.txt; grep -E "^==|^ +[0-9]+ +[0-9]|note|rror" $OUT/bench.txt; grep -E "t/s|^\|  +512" $OUT/llamacpp.txt | tail -8
cd $OUT && tar cJf extra.tar.xz *.json lcpp-build.log profiles inspect-*.txt; rm -rf *.json lcpp-build.log profiles inspect-*.txt; ls $OUT
