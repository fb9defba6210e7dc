#!/usr/bin/env bash
# A chaos campaign: many `make chaos` runs, in chunks, each chunk under
# `flock /tmp/replog-chaos.lock` so that other cluster runs (tests, soaks,
# benchmarks) can take the machine between chunks; then one table of every
# run and its seed (docs/chaos-results.md).
#
#   ops/campaign.sh run [CHUNKS]    CHUNKS chunks (default 10) of
#                                   CAMPAIGN_CHUNK runs each; a chunk whose
#                                   log already ends with its summary is
#                                   kept, so an interrupted campaign resumes
#   ops/campaign.sh plant [RUNS]    RUNS (default 5) runs of PLANT_SECONDS
#                                   (10) with the planted skipped fsync,
#                                   one partition, power-fail-all only;
#                                   each must report lost acknowledged
#                                   writes (longer runs lose so much that
#                                   nodes cannot restart and the final
#                                   reads wait out their limits)
#   ops/campaign.sh table [plant]   the markdown table of every finished run
#                                   (of the planted runs with `plant`)
#   ops/campaign.sh summary         totals: runs, acknowledged, anomalies
#
# Environment:
#   CAMPAIGN_OUT     where chunk logs and run files go (target/campaign)
#   CAMPAIGN_CHUNK   runs per chunk (10)
#   CAMPAIGN_SEED    base seed; chunk K runs with CHAOS_SEED=CAMPAIGN_SEED+K
#                    (default: random per chunk, printed in its log)
#   CAMPAIGN_KEEP    1 keeps every run's node data (default: only the
#                    histories and reports of clean runs)
#   CHAOS_SECONDS    per run (35), CHAOS_FAULTS (all); other CHAOS_*
#                    variables pass through (docs/chaos.md)
#   CAMPAIGN_BUILD   where the binaries come from (target/release; `make
#                    build`). They are copied to $CAMPAIGN_OUT/bin on the
#                    first chunk and every chunk runs those copies, so a
#                    rebuild during a campaign does not change what it tests;
#                    $CAMPAIGN_OUT/bin/BUILD names the commit.
#
# Needs root (iptables, FUSE), as `make chaos` does.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${CAMPAIGN_OUT:-target/campaign}
CHUNK=${CAMPAIGN_CHUNK:-10}
BUILD=${CAMPAIGN_BUILD:-target/release}
BIN=$OUT/bin/chaos
LOCK=/tmp/replog-chaos.lock
export CHAOS_SECONDS=${CHAOS_SECONDS:-35}
export CHAOS_FAULTS=${CHAOS_FAULTS:-all}

die() { echo "campaign: $*" >&2; exit 2; }

# Whether a chunk log holds a finished chaos invocation.
finished() { [[ -f $1 ]] && grep -q '^chaos: runs=[0-9]* acknowledged=' "$1"; }

# Drops node data directories of a finished chunk (they are gigabytes over
# a campaign); histories and reports stay. Failed runs keep everything.
prune() {
    local dir=$1 log=$2
    [[ ${CAMPAIGN_KEEP:-0} == 1 ]] && return
    grep -q 'ANOMALY\|PROBLEM\|run failed' "$log" && return
    local d
    for d in "$dir"/run-*/; do
        [[ -d $d ]] && rm -rf "$d"
    done
    return 0
}

run_chunk() {
    local name=$1 seed=$2
    shift 2
    local dir=$OUT/$name log=$OUT/$name.log
    if finished "$log"; then
        echo "campaign: $name done earlier: $(grep '^chaos: runs=[0-9]* acknowledged=' "$log")"
        return 0
    fi
    mkdir -p "$OUT"
    local seed_env=()
    [[ -n $seed ]] && seed_env=(CHAOS_SEED="$seed")
    echo "campaign: $name ($(date -u +%H:%M:%S)) waiting for $LOCK"
    local rc=0
    flock "$LOCK" env "${seed_env[@]}" CHAOS_OUT="$dir" "$@" "$BIN" >"$log" 2>&1 || rc=$?
    echo "campaign: $name ($(date -u +%H:%M:%S)) exit $rc: $(grep '^chaos: runs=[0-9]* acknowledged=' "$log" || echo 'no summary')"
    grep '^chaos: planted' "$log" || true
    prune "$dir" "$log"
    return 0
}

# The table rows of the chaos logs: run, seed, the report columns
# (acked fail unknown unk-read topic-ops, 14 anomaly kinds, anomalies),
# problems, faults, anomaly summary. Printed at the end of each log after
# the header line that starts with "run".
rows() {
    local log=$1
    awk '/^run +seed +acked/ {t = 1; next} /^chaos: runs=/ {t = 0} t && NF >= 24 {print}' "$log"
}

table() {
    local want=${1:-} log name
    if [[ $want == plant ]]; then
        echo "| run | seed | faults applied | acked | unknown | lost-write | unseen | anomalies |"
        echo "|---:|---:|---|---:|---:|---:|---:|---:|"
    else
        echo "| chunk | run | seed | faults applied | acked | unknown | topic ops | anomalies | problems |"
        echo "|---|---:|---:|---|---:|---:|---:|---:|---:|"
    fi
    for log in $(ls "$OUT"/*.log 2>/dev/null | sort -V); do
        finished "$log" || continue
        name=$(basename "$log" .log)
        if grep -q '^chaos: planted' "$log"; then
            [[ $want == plant ]] || continue
            rows "$log" | awk '{
                faults = $24; gsub(/x/, "×", faults); gsub(/,/, ", ", faults)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, faults, $3, $5, $8, $9, $22
            }'
        elif [[ $want != plant ]]; then
            rows "$log" | awk -v c="$name" '{
                faults = $24; gsub(/x/, "×", faults); gsub(/,/, ", ", faults)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, $1, $2, faults, $3, $5, $7, $22, $23
            }'
        fi
    done
}

summary() {
    local log runs=0 acked=0 anomalies=0 problems=0 plant=0 caught=0
    for log in "$OUT"/*.log; do
        finished "$log" || continue
        if grep -q '^chaos: planted' "$log"; then
            plant=$((plant + $(rows "$log" | wc -l)))
            caught=$((caught + $(sed -n 's/^chaos: planted .* caught in \([0-9]*\) of.*/\1/p' "$log")))
            continue
        fi
        while read -r r; do
            set -- $r
            runs=$((runs + 1)); acked=$((acked + $3)); anomalies=$((anomalies + ${22})); problems=$((problems + ${23}))
        done < <(rows "$log")
    done
    echo "campaign: runs=$runs acknowledged=$acked anomalies=$anomalies problems=$problems planted-runs=$plant caught=$caught"
}

# The binaries under test, copied once per campaign.
stage() {
    [[ -x $BIN ]] && return
    local b
    for b in chaos replog-node replog-faultfs; do
        [[ -x $BUILD/$b ]] || die "no $BUILD/$b: run make build (or set CAMPAIGN_BUILD)"
    done
    mkdir -p "$OUT/bin"
    cp "$BUILD/replog-node" "$BUILD/replog-faultfs" "$OUT/bin/"
    cp "$BUILD/chaos" "$OUT/bin/chaos"
    {
        echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (uncommitted changes)')"
        echo "built $(date -u -r "$BUILD/chaos" +%FT%TZ) chaos, $(date -u -r "$BUILD/replog-node" +%FT%TZ) replog-node"
    } >"$OUT/bin/BUILD"
    echo "campaign: binaries staged in $OUT/bin: $(head -1 "$OUT/bin/BUILD")"
}
export REPLOG_NODE_BIN=$OUT/bin/replog-node REPLOG_FAULTFS_BIN=$OUT/bin/replog-faultfs

case ${1:-run} in
    run)
        stage
        chunks=${2:-10}
        for ((k = 1; k <= chunks; k++)); do
            seed=""
            [[ -n ${CAMPAIGN_SEED:-} ]] && seed=$((CAMPAIGN_SEED + k))
            run_chunk "chunk-$k" "$seed" CHAOS_RUNS="$CHUNK"
        done
        summary
        ;;
    plant)
        stage
        runs=${2:-5}
        seed=""
        [[ -n ${CAMPAIGN_SEED:-} ]] && seed=$CAMPAIGN_SEED
        run_chunk plant "$seed" CHAOS_RUNS="$runs" CHAOS_SECONDS="${PLANT_SECONDS:-10}" CHAOS_PLANT=skip-fsync \
            CHAOS_FAULTS=power-fail-all CHAOS_PARTITIONS=1
        ;;
    table) table "${2:-}" ;;
    summary) summary ;;
    *) die "usage: $0 run [CHUNKS] | plant [RUNS] | table | summary" ;;
esac
