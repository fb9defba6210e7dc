#!/usr/bin/env bash
# What idle partitions cost: a fresh local 3-node release cluster takes
# IDLE_PARTITIONS partitions (default 10000, in topics of 1000) at RF 3, so
# each node holds that many replicas; once every group is quiet (or, with
# IDLE_QUIESCE_AFTER_MS=0, once the topics exist and a settling pause has
# passed) it measures each node's CPU over IDLE_SECONDS (default 20) from
# /proc/<pid>/stat and its resident memory, against the same nodes before
# any topic existed. IDLE_PERF=1 also profiles node 1 meanwhile (perf, to
# target/bench/idle-perf.txt). Then it stops the whole cluster and starts it
# again, and times how long until every group has a leader and is quiet.
# Runs under `flock /tmp/replog-chaos.lock`. Prints one JSON line last:
#   {"bench":"idle","partitions":N,"quiesce_after_ms":X,"create_s":..,
#    "cpu_pct":[..],"rss_mb":[..],"rss_base_mb":[..],"kb_per_partition":..,"quiet":[..],
#    "restart_settled_s":..,"restarts_settled_s":[..]}
# It needs about 1 MB of free disk per partition and checks first; a run
# that cannot finish (too little disk, a topic not created or its groups
# not open within 300 s) prints {"bench":"idle","partitions":N,"error":"why"} and exits 1,
# and `make bench` reports the section as not measured.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${IDLE_LOCKED:-}" ]; then
  exec env IDLE_LOCKED=1 flock /tmp/replog-chaos.lock "$0" "$@"
fi
N=${IDLE_PARTITIONS:-10000}
SECS=${IDLE_SECONDS:-20}
export REPLOG_QUIESCE_AFTER_MS=${IDLE_QUIESCE_AFTER_MS:-5000}
# Two file descriptors or so per partition replica.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ -x target/release/replog-node ] && [ -x target/release/replog ] || cargo build --release -p replog-node -p replog-client --bins
R=target/release/replog
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-idle.XXXXXX)}"
trap 'if [ -n "${IDLE_KEEP:-}" ]; then ops/cluster.sh down >/dev/null 2>&1; else ops/cluster.sh down --purge >/dev/null 2>&1; fi || true' EXIT
# A run that cannot finish says why, on stderr and as the JSON line (the
# report shows it), and exits 1.
fail() {
  echo "idle: $*" >&2
  python3 -c 'import json, sys; print(json.dumps({"bench": "idle", "partitions": int(sys.argv[1]), "error": sys.argv[2]}))' "$N" "$*"
  exit 1
}
# Each partition's three replicas take about 0.9 MB of disk here (segment
# files and sled), all on this host's volume: a volume that fills midway
# holds every append back, and the run would wait on it.
need_mb=$((N + 1024))
free_mb=$(df -Pm "$REPLOG_CLUSTER_DIR" | awk 'NR==2{print $4}')
[ "$free_mb" -ge "$need_mb" ] ||
  fail "$N partitions need about $need_mb MB on $(df -P "$REPLOG_CLUSTER_DIR" | awk 'NR==2{print $6}'), $free_mb MB free; not run"
# Thousands of groups to hand off would hold a graceful stop for long.
export REPLOG_SHUTDOWN_HANDOFF_MS=${REPLOG_SHUTDOWN_HANDOFF_MS:-2000}
REPLOG_MAX_PARTITIONS=1000 ops/cluster.sh up 3 >/dev/null
export REPLOG_BOOTSTRAP=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
pids() { for id in 1 2 3; do cat "$REPLOG_CLUSTER_DIR/node-$id.pid"; done; }
rss_mb() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s --noproxy '*' "127.0.0.1:910$1/metrics" | awk -v n="$2" '$1==n{print $2}'; }

base=$(for p in $(pids); do rss_mb "$p"; echo; done | paste -sd, -)
t0=$(date +%s.%N)
opened() { for id in 1 2 3; do metric "$id" replog_raft_groups; done | awk -v n="$1" '$1>=n{c++} END{print c+0}'; }
quieted() { for id in 1 2 3; do metric "$id" replog_raft_groups_quiet; done | awk -v n="$1" '$1>=n{c++} END{print c+0}'; }
# A topic at a time, each once the groups before it are open everywhere
# and quiet: a thousand new groups elect and tick until they go quiet, and
# several thousand ticking groups are more than 2 cores keep up with.
left=$N i=0 done_=0
while [ "$left" -gt 0 ]; do
  n=$((left < 1000 ? left : 1000))
  # Each topic is created and open everywhere within 300 s, or the run
  # fails (IDLE_KEEP=1 keeps the nodes' logs to see why).
  limit=$(($(date +%s) + 300))
  late() {
    [ "$(date +%s)" -lt "$limit" ] ||
      fail "$1 after 300 s (groups open: $(for id in 1 2 3; do metric "$id" replog_raft_groups; done | paste -sd/ -))"
  }
  until $R topic create "idle-$i" --partitions "$n" --replication-factor 3 >/dev/null 2>&1 ||
    $R topic describe "idle-$i" >/dev/null 2>&1; do
    late "topic idle-$i not created"
    sleep 1
  done
  left=$((left - n)) i=$((i + 1)) done_=$((done_ + n))
  until [ "$(opened "$done_")" = 3 ]; do
    late "$done_ partitions not open on every node"
    sleep 0.5
  done
  if [ "$REPLOG_QUIESCE_AFTER_MS" != 0 ]; then
    limit=$(($(date +%s) + 120))
    until [ "$(quieted "$done_")" = 3 ] || [ "$(date +%s)" -gt "$limit" ]; do sleep 0.5; done
  fi
  echo "idle: $done_ partitions open$([ "$REPLOG_QUIESCE_AFTER_MS" != 0 ] && echo ", quiet: $(for id in 1 2 3; do metric "$id" replog_raft_groups_quiet; done | paste -sd/ -)")" >&2
done
create_s=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
echo "idle: $N partitions open on every node after ${create_s} s" >&2
if [ "$REPLOG_QUIESCE_AFTER_MS" != 0 ]; then
  limit=$(($(date +%s) + 300))
  until [ "$(for id in 1 2 3; do metric "$id" replog_raft_groups_quiet; done | awk -v n="$N" '$1>=n{c++} END{print c+0}')" = 3 ]; do
    [ "$(date +%s)" -lt "$limit" ] || { echo "idle: not every group quiet after 300 s" >&2; break; }
    sleep 1
  done
else
  sleep 15
fi
quiet=$(for id in 1 2 3; do metric "$id" replog_raft_groups_quiet; done | paste -sd, -)
hz=$(getconf CLK_TCK)
declare -A before
for p in $(pids); do before[$p]=$(ticks "$p"); done
if [ -n "${IDLE_PERF:-}" ] && command -v perf >/dev/null; then
  mkdir -p target/bench
  perf record -F 199 -g -o target/bench/idle-perf.data -p "$(pids | sed -n 1p)" -- sleep "$SECS" >/dev/null 2>&1
  perf report -i target/bench/idle-perf.data --stdio --no-children --percent-limit 1 2>/dev/null | grep -v '^$' | sed -n 1,150p >target/bench/idle-perf.txt
else
  sleep "$SECS"
fi
cpu=$(for p in $(pids); do python3 -c "print(round(($(ticks "$p") - ${before[$p]}) / $hz / $SECS * 100, 1))"; done | paste -sd, -)
rss=$(for p in $(pids); do rss_mb "$p"; echo; done | paste -sd, -)

# The whole cluster stopped and started again, IDLE_RESTARTS times (default
# 1): how long until every group has a leader and (quiescence on) every
# replica is quiet again. -1: not within IDLE_RESTART_LIMIT seconds
# (default 300); the next restart goes on from whatever state that left.
led() { for id in 1 2 3; do metric "$id" replog_raft_leaders; done | awk '{s+=$1} END{print s+0}'; }
restarts=""
for _ in $(seq 1 "${IDLE_RESTARTS:-1}"); do
  ops/cluster.sh down >/dev/null
  t1=$(date +%s.%N)
  REPLOG_MAX_PARTITIONS=1000 ops/cluster.sh up 3 >/dev/null
  limit=$(($(date +%s) + ${IDLE_RESTART_LIMIT:-300}))
  restart_s=-1
  while [ "$(date +%s)" -lt "$limit" ]; do
    if [ "$(led)" -ge "$N" ] && { [ "$REPLOG_QUIESCE_AFTER_MS" = 0 ] || [ "$(quieted "$N")" = 3 ]; }; then
      restart_s=$(python3 -c "import time; print(round(time.time() - $t1, 1))")
      break
    fi
    sleep 0.5
  done
  echo "idle: after a restart of the whole cluster, every group led$([ "$REPLOG_QUIESCE_AFTER_MS" != 0 ] && echo " and quiet") after ${restart_s} s (leaders $(led))" >&2
  restarts="$restarts${restarts:+,}$restart_s"
done
python3 - "$N" "$REPLOG_QUIESCE_AFTER_MS" "$create_s" "$cpu" "$rss" "$base" "$quiet" "$restarts" <<'EOF'
import json, sys
n, after, create_s, cpu, rss, base, quiet, restarts = sys.argv[1:]
f = lambda s: [float(x) for x in s.split(",") if x]
cpu, rss, base = f(cpu), f(rss), f(base)
kb = round(sum(r - b for r, b in zip(rss, base)) / len(rss) * 1024 / int(n), 1)
print(json.dumps({"bench": "idle", "partitions": int(n), "quiesce_after_ms": int(after), "create_s": float(create_s),
                  "cpu_pct": cpu, "rss_mb": rss, "rss_base_mb": base, "kb_per_partition": kb,
                  "quiet": [int(float(q)) for q in quiet.split(",") if q], "restart_settled_s": f(restarts)[0], "restarts_settled_s": f(restarts)}))
EOF
