#!/usr/bin/env bash
# Session 14, call 5: the wgpu tests in parallel with cooperative-matrix compiles serialised
# (call 4 hung there); if they hang again, one thread at a time.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig; export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
T=/tmp/fd/bin/runtime-tests
FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 90 $T backend::wgpu > $OUT/tests.txt 2>&1
echo "tests exit $? at $SECONDS s" >> $OUT/tests.txt
grep -E "^test .*(FAIL|ok)$|test result|exit" $OUT/tests.txt | grep -v "\.\.\. ok" | head
if ! grep -q "test result: ok" $OUT/tests.txt; then
  grep -c "\.\.\. ok" $OUT/tests.txt
  FDPP_REQUIRE_GPU=1 FDPP_REQUIRE_COOPERATIVE_MATRIX=1 timeout 150 $T backend::wgpu --test-threads=1 > $OUT/tests1.txt 2>&1
  echo "tests1 exit $? at $SECONDS s" >> $OUT/tests1.txt
  grep -E "test result|exit|FAIL|panicked" $OUT/tests1.txt | head; tail -3 $OUT/tests1.txt
fi
