#!/usr/bin/env bash
# What broker-side schema validation costs: the same JSON events (framed
# with the id of subject bench-event) produced to a topic bound to the
# subject (every record decoded and validated by the partition leader) and
# to an unbound one, in one run against a fresh local 3-node release
# cluster. Results go to target/bench/schemas.jsonl. Knobs: BENCH_RECORDS,
# BENCH_SIZE, BENCH_PARTITIONS, BENCH_PRODUCERS.
set -euo pipefail
cd "$(dirname "$0")/.."
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-bench.XXXXXX)}"
trap 'ops/cluster.sh down --purge >/dev/null 2>&1 || true' EXIT
N="${BENCH_RECORDS:-300000}"; S="${BENCH_SIZE:-200}"; P="${BENCH_PARTITIONS:-6}"; K="${BENCH_PRODUCERS:-4}"
# BENCH_PROFILE=debug measures the debug build (no release build needed).
PROFILE="${BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then cargo build --release --bins; fi
export REPLOG_BIN_DIR="target/$PROFILE"
ops/cluster.sh up 3
mkdir -p target/bench
R="target/$PROFILE/replog"
# Alternate, so that neither side always runs on a warmer cluster.
for round in 1 2; do
  for v in plain validated; do
    flag=(); [ "$v" = validated ] && flag=(--validate)
    $R bench produce --topic "schema-$v-$round" --payload json "${flag[@]}" --record-size "$S" --records "$N" \
      --partitions "$P" --producers "$K" --output json | tail -1 | tee -a target/bench/schemas.jsonl
  done
done
