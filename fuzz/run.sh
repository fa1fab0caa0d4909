#!/usr/bin/env bash
# Coverage-guided fuzzing of fdpp's model-file readers on stable Rust.
#
#   fuzz/run.sh TARGET|all SECONDS [libFuzzer flags...]
#
# Builds the targets of runtime/fuzz_targets.rs with libFuzzer and sanitizer-coverage
# instrumentation (release, with overflow checks and debug assertions), then runs each for
# SECONDS seconds (extra flags go to libFuzzer, e.g. -runs=1000000 to stop sooner). Each run
# starts from the committed seeds (fuzz/corpus/TARGET) and reproducers
# (fuzz/reproducers/TARGET), keeps what it finds in fuzz/work/TARGET, and writes a crash,
# timeout or out-of-memory input to fuzz/artifacts/TARGET/. The exit status is non-zero if
# any target failed. Targets: gguf hf_folder config tokenizer chat_template.
set -euo pipefail
cd "$(dirname "$0")"

ALL=(gguf hf_folder config tokenizer chat_template)
usage() {
    echo "usage: fuzz/run.sh TARGET|all SECONDS [libFuzzer flags...]  (targets: ${ALL[*]})" >&2
    exit 2
}
[ $# -ge 2 ] || usage
case "$1" in
    all) targets=("${ALL[@]}") ;;
    gguf | hf_folder | config | tokenizer | chat_template) targets=("$1") ;;
    *) usage ;;
esac
seconds=$2
[[ $seconds =~ ^[0-9]+$ ]] || usage
shift 2

# Inputs longer than any real file of the kind needs to be to reach every check.
max_len() {
    case "$1" in
        config) echo 8192 ;;
        chat_template) echo 16384 ;;
        *) echo 65536 ;;
    esac
}

# libFuzzer's coverage feedback without nightly: the sanitizer-coverage pass of LLVM with
# the same options cargo-fuzz passes (inline 8-bit edge counters, the PC table, and
# comparison tracing so that magic numbers and keys are learnt). With an explicit --target,
# build scripts and proc macros are built without them.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
start=$(date +%s)
cargo build --release --locked --target "$host" --target-dir "$target_dir" $(printf -- '--bin %s ' "${targets[@]}")
echo "fuzz/run.sh: built in $(($(date +%s) - start)) s"

# hf_folder writes its files into a scratch folder under TMPDIR: one in memory where there
# is /dev/shm, removed at exit.
base=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
scratch=$(mktemp -d "$base/fdpp-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t" work/logs
    [ -n "$(ls -A "corpus/$t" 2>/dev/null)" ] || { echo "fuzz/run.sh: corpus/$t is empty" >&2; exit 1; }
    seeds=("corpus/$t")
    [ -d "reproducers/$t" ] && seeds+=("reproducers/$t")
    log="work/logs/$t.log"
    echo "fuzz/run.sh: $t for $seconds s (log: fuzz/$log)"
    status=0
    t0=$(date +%s)
    "$target_dir/$host/release/$t" "work/$t" "${seeds[@]}" \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
    echo "fuzz/run.sh: $t ran $(($(date +%s) - t0)) s"
    # The last status line (executions, coverage, features, corpus) and the final counts.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" | tr '\n' ' ' || true
    echo
    # An uninstrumented binary still runs, blind: libFuzzer then reports no counters.
    if ! grep -qE '^INFO: Loaded [1-9][0-9]* modules +\([1-9][0-9]* inline 8-bit counters\)' "$log" ||
        grep -q 'Is the code instrumented for coverage' "$log"; then
        echo "fuzz/run.sh: $t runs without coverage instrumentation" >&2
        status=1
    fi
    if [ "$status" != 0 ]; then
        echo "fuzz/run.sh: $t FAILED (exit $status); the end of its log:" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: failed: ${failed[*]}; inputs are in fuzz/artifacts/" >&2
    exit 1
fi
echo "fuzz/run.sh: no crash in ${targets[*]}"
