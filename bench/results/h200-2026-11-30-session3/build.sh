#!/usr/bin/env bash
# Builds the release binary and the CUDA test binaries, packs them into .device/bin.tar.xz.
set -e
cd /work/main
cargo build --release 2>&1 | tail -1
rt=$(cargo test --release --no-run -p fdpp-runtime --lib 2>&1 | grep -o 'target/release/deps/fdpp_runtime-[0-9a-f]*')
cm=$(cargo test --release --no-run --test cuda_model 2>&1 | grep -o 'target/release/deps/cuda_model-[0-9a-f]*')
ck=$(cargo test --release --no-run --test check 2>&1 | grep -o 'target/release/deps/check-[0-9a-f]*')
rm -rf .device/bin && mkdir -p .device/bin
cp target/release/fdpp .device/bin/fdpp; cp $rt .device/bin/runtime-tests; cp $cm .device/bin/cuda_model; cp $ck .device/bin/check
strip .device/bin/*
(cd .device && tar cJf bin.tar.xz bin)
ls -la .device/bin.tar.xz
