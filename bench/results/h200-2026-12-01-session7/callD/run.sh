#!/usr/bin/env bash
# Session 7, call D: 6325227 on wgpu (Vulkan loader carried): fdpp tune on SmolLM2's shapes,
# decode after a 128-token prompt with the built-in table and with the profile.
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -x .device/bin/fdpp ] || tar xJf .device/bin.tar.xz -C .device
export FDPP_CACHE=/tmp/fdppcache
T="taskset -c 0-15"
F="$T .device/bin/fdpp"
B=$OUT/bench.txt
timeout 200 $F tune --backend wgpu --shape smollm2-135m --json $OUT/tune-smollm2-wgpu.json > $OUT/tune-smollm2-wgpu.txt 2>&1; echo "exit $? at $SECONDS s" >> $OUT/tune-smollm2-wgpu.txt
W="--backend wgpu --prompt 128 --repeats 3 --gen 128 --batch 1,8"
echo "== wgpu SmolLM2, built-in" >> $B; timeout 60 $F bench --shape smollm2-135m $W --builtin-table >> $B 2>&1
echo "== wgpu SmolLM2, tuned" >> $B; timeout 60 $F bench --shape smollm2-135m $W >> $B 2>&1
grep -hE "^tuned choice|^exit|  \[N=|^fdpp: tuning" $OUT/tune-*.txt
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
cd $OUT && tar cJf extra.tar.xz *.json && rm -f *.json
