#!/usr/bin/env bash
# make fuzz: every fuzz target under libFuzzer, coverage guided, for
# FUZZ_SECONDS each (default 60). Prints one line per target with the
# inputs tried, the time and the crashes, and a total; exits non-zero on
# any crash. See docs/fuzzing.md.
#
#   FUZZ_SECONDS=60     time per target
#   FUZZ_SEED=N         libFuzzer's -seed (decimal); random if unset
#   FUZZ_TARGETS="a b"  a subset (replog-fuzz list shows them all)
#   FUZZ_ENGINE=random  the stable random engine instead (no C++ build,
#                       no instrumentation; what make test's smoke runs)
#
# The build works on the stable toolchain: libfuzzer-sys compiles
# libFuzzer with the system C++ compiler, and rustc's stable codegen
# options add the sanitizer-coverage instrumentation libFuzzer reads.
# --target keeps those flags off build scripts and proc macros; a target
# directory of its own keeps the instrumented build from invalidating the
# normal one. Corpora persist in target/fuzz/corpus/<target> across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
ENGINE=${FUZZ_ENGINE:-libfuzzer}
OUT=target/fuzz
CARGO=${CARGO:-cargo}

# The uninstrumented build: the random engine, the target list, and
# replay of a crash file without libFuzzer.
$CARGO build --release -p replog-fuzz --bin replog-fuzz
if [[ $ENGINE == random ]]; then
    # shellcheck disable=SC2086
    exec target/release/replog-fuzz run --seconds "$SECONDS_PER_TARGET" ${FUZZ_TARGETS:-}
fi
targets=${FUZZ_TARGETS:-$(target/release/replog-fuzz list | awk '{print $1}')}

HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=$OUT/build
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
$CARGO build --release -p replog-fuzz --features libfuzzer --bin replog-fuzz-libfuzzer --target "$HOST"
BIN=$OUT/build/$HOST/release/replog-fuzz-libfuzzer
mkdir -p "$OUT/crashes" "$OUT/logs"
total_inputs=0 total_crashes=0 n=0
for t in $targets; do
    corpus=$OUT/corpus/$t
    mkdir -p "$corpus"
    log=$OUT/logs/$t.log
    before=$(find "$OUT/crashes" -name "$t-*" | wc -l)
    seed_arg=()
    [[ -n ${FUZZ_SEED:-} ]] && seed_arg=(-seed="$FUZZ_SEED")
    start=$EPOCHREALTIME
    # Regression inputs seed the corpus, so a fixed bug stays fixed.
    seeds=()
    [[ -d fuzz/regressions/$t ]] && seeds=(fuzz/regressions/$t)
    rc=0
    REPLOG_FUZZ_TARGET=$t "$BIN" "$corpus" "${seeds[@]}" "${seed_arg[@]}" \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$OUT/crashes/$t-" >"$log" 2>&1 || rc=$?
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    seed=$(sed -n 's/^INFO: Seed: //p' "$log" | head -1)
    crashes=$(( $(find "$OUT/crashes" -name "$t-*" | wc -l) - before ))
    if (( rc != 0 && crashes == 0 )); then crashes=1; fi
    printf 'fuzz: target=%s engine=libfuzzer seed=%s inputs=%s seconds=%s crashes=%d\n' \
        "$t" "${seed:-?}" "${inputs:-0}" "$elapsed" "$crashes"
    if (( crashes > 0 )); then
        echo "fuzz: $t failed; log: $log; replay: target/release/replog-fuzz replay $t $OUT/crashes/$t-*" >&2
        tail -30 "$log" >&2
    fi
    total_inputs=$(( total_inputs + ${inputs:-0} ))
    total_crashes=$(( total_crashes + crashes ))
    n=$(( n + 1 ))
done
echo "fuzz: engine=libfuzzer targets=$n inputs=$total_inputs crashes=$total_crashes"
(( total_crashes == 0 ))
