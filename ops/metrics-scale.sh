#!/usr/bin/env bash
# What a scrape costs as partitions grow: one release node on loopback
# hosting METRICS_PARTITIONS partitions (default 2000, replication factor 1,
# in topics of at most 1000), scraped METRICS_SCRAPES times (default 5) per
# topic and per partition (metrics_per_partition). Prints per mode the
# series count, the scrape size and the median scrape time, e.g.
#   metrics-scale: mode=per_topic partitions=2000 series=... bytes=... median_ms=...
# Nothing else may listen on 127.0.0.1:17901 and :19901.
set -euo pipefail
cd "$(dirname "$0")/.."
P="${METRICS_PARTITIONS:-2000}"; N="${METRICS_SCRAPES:-5}"
# About two file descriptors per partition (its active segment and its
# directory): take all this shell may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
BIN=target/release
[ -x "$BIN/replog-node" ] && [ -x "$BIN/replog" ] || cargo build --release --bins
dir=$(mktemp -d /tmp/replog-metrics-scale.XXXXXX)
pid=""
# SIGTERM, then SIGKILL after 10 s: a graceful stop of thousands of groups
# takes minutes, and only the scrapes matter here.
stop() {
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}
trap 'stop; rm -rf "$dir"' EXIT
start() {
  "$BIN/replog-node" --id 1 --listen 127.0.0.1:17901 --metrics-listen 127.0.0.1:19901 \
    --data-dir "$dir/data" --initial-cluster 1=127.0.0.1:17901 --metrics-per-partition "$1" \
    --min-free-mb 64 >>"$dir/node.log" 2>&1 &
  pid=$!
  wait_ready
}
# /ready: the controller and every partition have a leader and are applied.
wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf --noproxy '*' 127.0.0.1:19901/ready >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "metrics-scale: node not ready; see $dir/node.log" >&2; tail -20 "$dir/node.log" >&2; exit 1
}
scrape() {
  local mode=$1 times=()
  for _ in $(seq 1 "$N"); do
    times+=("$(curl -s --noproxy '*' -o "$dir/scrape.txt" -w '%{time_total}' 127.0.0.1:19901/metrics)")
  done
  local series bytes median
  series=$(grep -vc '^#' "$dir/scrape.txt")
  bytes=$(wc -c <"$dir/scrape.txt")
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}')
  local fds rss
  fds=$(awk '/^process_open_fds /{print $2}' "$dir/scrape.txt")
  rss=$(awk '/^process_resident_memory_bytes /{printf "%d", $2/1048576}' "$dir/scrape.txt")
  echo "metrics-scale: mode=$mode partitions=$P series=$series bytes=$bytes median_ms=$median open_fds=$fds rss_mb=$rss"
}

start false
left=$P; t=0
while [ "$left" -gt 0 ]; do
  n=$(( left > 1000 ? 1000 : left ))
  "$BIN/replog" --bootstrap 127.0.0.1:17901 topic create "scale-$t" --partitions "$n" --replication-factor 1 >/dev/null
  left=$(( left - n )); t=$(( t + 1 ))
done
wait_ready
scrape per_topic
stop
start true
scrape per_partition
