#!/usr/bin/env bash
# Session 11, call E1 of 3 (the tree carried without tests/data/tokenizer, so that model
# chunks fit): binaries, the first model chunk; A/B of the GEMV refactor 180bf61: 5378cb6
# (prev, before it) against HEAD, interleaved, three rounds, median of 5 each.
set -u
mkdir -p /tmp/fd && tar xJf .device/bin.tar.xz -C /tmp/fd && tar xJf .device/ab.tar.xz -C /tmp/fd && cp .device/q0 /tmp/fd/q0
export FDPP_CACHE=/tmp/fdppcache; mkdir -p $FDPP_CACHE
X=/tmp/fd/bin/fdpp; A=/tmp/fd/ab/fdpp-prev
B=$OUT/bench.txt
S="--backend cuda --prompt 512 --repeats 5 --builtin-table --batch 1"
run() { echo "== $1" >> $B; shift; timeout 80 "$@" >> $B 2>&1; }
for r in 1 2 3; do
run "prev 7b r$r" $A bench --shape llama2-7b $S --gen 32
run "x 7b r$r" $X bench --shape llama2-7b $S --gen 32
run "prev smollm2 r$r" $A bench --shape smollm2-135m $S --gen 128
run "x smollm2 r$r" $X bench --shape smollm2-135m $S --gen 128
done
grep -E "^==|^ +[0-9]+ +[0-9]|rror" $B
