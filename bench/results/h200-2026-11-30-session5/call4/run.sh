#!/usr/bin/env bash
# Session 5, call 4: issue 14 -- fdpp tune on the H200 with wgpu for Llama-2-7B's shapes (second
# B tiling), decode at batch 8 with the built-in table and the tuned profile; a second cuda
# SmolLM2 tune to see how much the within-5% count moves between runs.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache; rm -rf $FDPP_CACHE/profiles
T="taskset -c 12-15"
F="$T .device/bin/fdpp"
timeout 200 $F tune --backend wgpu --shape llama2-7b --json $OUT/tune-wgpu-llama2-7b.json > $OUT/tune-wgpu-llama2-7b.txt 2>&1; echo "exit $?" >> $OUT/tune-wgpu-llama2-7b.txt
for r in 1 2; do timeout 40 $F tune --backend cuda --shape smollm2-135m > $OUT/tune-cuda-smollm2-$r.txt 2>&1; echo "exit $?" >> $OUT/tune-cuda-smollm2-$r.txt; done
for t in --builtin-table ""; do timeout 60 $F bench --shape llama2-7b --backend wgpu --prompt 128 --repeats 3 --batch 1,8 --gen 64 $t >> $OUT/bench.txt 2>&1; done
grep -hE "^tuned choice|^exit|tuned in" $OUT/tune-*.txt; grep -E "^ +[0-9]+ +[0-9]|rror|note" $OUT/bench.txt
cd $OUT && xz -9 *.json; ls $OUT
