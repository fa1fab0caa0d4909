#!/usr/bin/env bash
# Session 12, call D: set-up only (the binaries and the first half of the model stay in /tmp/fd for call E).
set -u
mkdir -p /tmp/fd && cp .device/m0 /tmp/fd/m0 && tar xJf .device/bin.tar.xz -C /tmp/fd
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
ls -la /tmp/fd /tmp/fd/bin; nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1; cat $OUT/gpu.txt
