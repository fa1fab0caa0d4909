#!/bin/bash
# usage: run.sh BIN TAG ... : fdpp tune on lavapipe for each (BIN, TAG) in turn, each stopped when it reaches the LM head (the 5th shape), then --show.
cd /tmp/wt14-run
while [ $# -ge 2 ]; do
  bin=$1; tag=$2; shift 2
  d=/tmp/wt14-run/$tag; mkdir -p $d; rm -rf /tmp/lvp14-$tag
  { date; uptime; } > $d/start.txt
  XDG_RUNTIME_DIR=/tmp FDPP_CACHE=/tmp/lvp14-$tag ./$bin tune --backend wgpu --adapter llvmpipe --shape smollm2-135m --grid 1,2,3,4,6,8,12,16,32 > $d/stdout.txt 2> $d/stderr.txt &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    if grep -q "N=49152" $d/stderr.txt; then { date; uptime; } > $d/stopped.txt; kill $pid; break; fi
    sleep 2
  done
  wait $pid
  XDG_RUNTIME_DIR=/tmp FDPP_CACHE=/tmp/lvp14-$tag ./$bin tune --show --backend wgpu --adapter llvmpipe > $d/show.txt 2>&1
done
echo done > /tmp/wt14-run/all-done
