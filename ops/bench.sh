#!/usr/bin/env bash
# Produce and consume benchmarks against a fresh local 3-node release
# cluster. Each `replog bench` prints one JSON line; they are collected in
# target/bench/results.jsonl. Knobs: BENCH_RECORDS, BENCH_SIZE,
# BENCH_PARTITIONS, BENCH_PRODUCERS.
set -euo pipefail
cd "$(dirname "$0")/.."
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-bench.XXXXXX)}"
trap 'ops/cluster.sh down >/dev/null 2>&1 || true' EXIT
N="${BENCH_RECORDS:-500000}"; S="${BENCH_SIZE:-100}"; P="${BENCH_PARTITIONS:-6}"; K="${BENCH_PRODUCERS:-4}"
cargo build --release --bins
ops/cluster.sh up 3
mkdir -p target/bench
R=target/release/replog
for acks in all none; do
  $R bench produce --topic "bench-$acks" --record-size "$S" --records "$N" --partitions "$P" --producers "$K" --acks "$acks" --output json | tail -1 | tee -a target/bench/results.jsonl
done
# The same records three ways, in one run so they compare: plain partition
# readers, one consumer-group member (a new group each run, so it starts
# at the earliest), and Subscribe streams.
$R bench consume --topic bench-all --record-size "$S" --records "$N" --partitions "$P" --output json | tail -1 | tee -a target/bench/results.jsonl
$R bench consume --topic bench-all --record-size "$S" --records "$N" --partitions "$P" --group "bench-$$-$(date +%s)" --output json | tail -1 | tee -a target/bench/results.jsonl
$R bench consume --topic bench-all --record-size "$S" --records "$N" --partitions "$P" --subscribe --output json | tail -1 | tee -a target/bench/results.jsonl
for id in 1 2 3; do curl -s "127.0.0.1:910$id/metrics" | grep -E '^replog_storage_(flush|files)' | sed "s/^/node $id: /"; done
