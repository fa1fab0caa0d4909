#!/usr/bin/env bash
# Session 13, call D: where gemm_matrix's time goes. FDPP_WGPU_MATRIX_DIAG (an experiment's
# pipeline constant, not kept): 0 as is; 1 stage once, then only the products, coop loads and
# barriers each step; 2 fetch and stage each step, products only in the last; 3 barriers only.
set -u
mkdir -p /tmp/fd && tar xJf .device/diag.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
F=/tmp/fd/diag/fdpp
for d in 0 1 2 3; do
  echo "== diag $d" >> $OUT/kernels.txt
  FDPP_WGPU_MATRIX_DIAG=$d timeout 60 $F bench kernels --backend wgpu --shape llama2-7b --m 16,512 --ctx 128 >> $OUT/kernels.txt 2>&1
done
echo "all done at $SECONDS s" >> $OUT/kernels.txt
grep -E "^==|^ +(16|512) |^[a-z_]+ \[|done at" $OUT/kernels.txt
