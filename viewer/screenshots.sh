#!/usr/bin/env bash
# Renders the viewer's main views to PNG (viewer/screenshots/) under Xvfb, drawn by wgpu on
# whatever Vulkan driver is present (Mesa's lavapipe on a machine without a GPU):
#   apt-get install xvfb mesa-vulkan-drivers; bash viewer/screenshots.sh
# PROFILE=dev uses the debug build the tests already made (the images are the same).
# The plan and traces are made on the spot (the CPU and the wgpu backend on the default
# model); the dataflow chart reads the H200 kernel timings kept in bench/results (bench kernels --backend cuda, Llama-2-7B shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
out=viewer/screenshots
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
profile=${PROFILE:-release}
cargo build --profile "$profile" -p fdpp -p fdpp-viewer
dir=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
fdpp=$dir/fdpp
viewer=$dir/fdpp-viewer
prompt="The capital of France is"
$fdpp generate --backend wgpu --temperature 0 --max-tokens 8 --profile --trace "$tmp/wgpu.json" "$prompt" > /dev/null
$fdpp generate --backend cpu --temperature 0 --max-tokens 8 --trace "$tmp/cpu.json" "$prompt" > /dev/null
shot() { xvfb-run -a -s "-screen 0 1400x900x24" "$viewer" "$@"; }
shot "$tmp/wgpu.json" --select layers.3.attn.qkv --screenshot "$out/graph.png"
shot "$tmp/wgpu.json" --compare "$tmp/cpu.json" --tab compare --select layers.0.attn.sdpa --screenshot "$out/compare.png"
shot --kernels bench/results/h200-2026-11-30-cuda/kernels-7b.json --tab chart --screenshot "$out/chart.png"
shot --backend wgpu --tab run --run "$prompt" --screenshot "$out/run.png"
ls -la "$out"
