#!/usr/bin/env bash
# Restart time against log size: a fresh local 3-node release cluster takes
# RESTART_GIB GiB (default 1) of 1 KiB records at RF 3 on 3 partitions; then
# node 2 is stopped gracefully (SIGTERM) and started again, and then killed
# (SIGKILL) and started again. Each time it prints how long node 2 took from
# its start until /health answered (it listens) and until /ready said 200
# (every replica it holds has caught up with its leader), with the bytes
# of log it held, and what its data directory holds. Runs under
# `flock /tmp/replog-chaos.lock` (no other cluster run meanwhile; set
# RESTART_LOCKED=1 when the caller holds it). The last line is JSON:
# {"bench":"restart","gib":N,"log_bytes":B,"sigterm_listen_ms":..,"sigterm_ready_ms":..,
#  "sigkill_listen_ms":..,"sigkill_ready_ms":..}
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
if [ -z "${RESTART_LOCKED:-}" ]; then
  exec 9>/tmp/replog-chaos.lock
  flock 9
fi
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-restart.XXXXXX)}"
trap 'ops/cluster.sh down --purge >/dev/null 2>&1 || true' EXIT
GIB="${RESTART_GIB:-1}"
ops/cluster.sh up 3 >/dev/null
R=target/release/replog
$R bench produce --topic restart --record-size 1024 --records $((1048576 * GIB)) --partitions 3 --producers 3 \
  --acks all --output json | tail -1
DATA="$REPLOG_CLUSTER_DIR/node-2"
log_bytes=$(du -sb "$DATA" | cut -f1)
echo "node 2 holds $log_bytes bytes under $DATA"

now_ms() { date +%s%3N; }
code() { curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 1 "http://127.0.0.1:910$1/$2" 2>/dev/null || true; }
# Starts node 2 and prints "listening_ms ready_ms" from the start.
timed_start() {
  local t0 listen=0 limit
  t0=$(now_ms)
  ops/cluster.sh start 2 >/dev/null
  limit=$((t0 + 120000))
  until [ "$(code 2 ready)" = 200 ]; do
    if [ "$listen" = 0 ] && [ "$(code 2 health)" = 200 ]; then listen=$(($(now_ms) - t0)); fi
    [ "$(now_ms)" -lt "$limit" ] || { echo "restart: node 2 not ready after 120 s" >&2; exit 1; }
    sleep 0.05
  done
  [ "$listen" != 0 ] || listen=$(($(now_ms) - t0))
  echo "$listen $(($(now_ms) - t0))"
}
ops/cluster.sh stop 2 >/dev/null
read -r term_listen term_ready < <(timed_start)
echo "after SIGTERM: listening in ${term_listen} ms, ready in ${term_ready} ms"
ops/cluster.sh kill 2 >/dev/null
read -r kill_listen kill_ready < <(timed_start)
echo "after SIGKILL: listening in ${kill_listen} ms, ready in ${kill_ready} ms"
echo "{\"bench\":\"restart\",\"gib\":$GIB,\"log_bytes\":$log_bytes,\"sigterm_listen_ms\":$term_listen,\"sigterm_ready_ms\":$term_ready,\"sigkill_listen_ms\":$kill_listen,\"sigkill_ready_ms\":$kill_ready}"
