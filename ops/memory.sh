#!/usr/bin/env bash
# Memory against log size: produces MEMORY_GB GiB (default 4) of 1 KiB
# records at RF 3 into a fresh local 3-node release cluster, one GiB at a
# time, prints every node's RSS after each GiB, then reads everything back
# and prints it again. A node's memory must not depend on how much log it
# holds; the last line is `memory: produced_gib=N max_rss_mb=M`.
set -euo pipefail
cd "$(dirname "$0")/.."
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-memory.XXXXXX)}"
trap 'ops/cluster.sh down --purge >/dev/null 2>&1 || true' EXIT
GB="${MEMORY_GB:-4}"
PER_GB=1048576 # 1 KiB records per GiB
cargo build --release --bins
ops/cluster.sh up 3 >/dev/null
R=target/release/replog
pids() { for id in 1 2 3; do cat "$REPLOG_CLUSTER_DIR/node-$id.pid"; done; }
max=0
rss() {
  local line="$1:" kb mb
  for p in $(pids); do
    kb=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")
    mb=$((kb / 1024))
    line+=" ${mb}MB"
    ((mb > max)) && max=$mb
  done
  echo "$line"
}
rss "start"
for i in $(seq 1 "$GB"); do
  $R bench produce --topic memory --record-size 1024 --records "$PER_GB" --partitions 3 --producers 3 \
    --acks all --output json | tail -1 >/dev/null
  rss "after ${i} GiB produced"
done
$R bench consume --topic memory --record-size 1024 --records $((PER_GB * GB - GB * 1)) --partitions 3 \
  --output json | tail -1 >/dev/null
rss "after reading it all back"
echo "memory: produced_gib=$GB max_rss_mb=$max"
