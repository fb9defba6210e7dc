#!/usr/bin/env bash
# make bench: the standard benchmark suite on a fresh local 3-node release
# cluster, the NATS JetStream R3 peer in the same run, and this machine's
# 4 KiB O_DSYNC write latency; writes docs/benchmarks.md (BENCH_DOC) from
# the JSON lines in target/bench/ (results.jsonl, nats.jsonl).
#
# Runs under `flock /tmp/replog-chaos.lock`, so that it does not share the
# machine with a chaos run or another benchmark. Knobs:
#   BENCH_QUICK=1           short runs (a minute or two; figures rough)
#   BENCH_SECONDS (20)      length of each fixed-rate run
#   BENCH_WARMUP_SECONDS (5) the same load first, not recorded, before each fixed-rate run
#   BENCH_NATS=0            skip the NATS peer
#   BENCH_ISOLATE=0         skip the isolation failover (needs root and iptables)
#   BENCH_PER_NODE_IP=1     nodes on 127.0.0.11-13 even without isolation
#   BENCH_IDLE_PARTITIONS   idle partition replicas per node (10000; ops/bench-idle.sh)
#   BENCH_IDLE_RESTARTS     whole-cluster restarts timed after it (3)
#   BENCH_RESTART_GIB       GiB of log the restarted node holds (1; ops/bench-restart.sh)
#   NATS_PEER               the peer's folder (default ../shared/peers, else /work/shared/peers)
#   BENCH_DOC               where to write the report (default docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_LOCKED:-}" ]; then
  exec env BENCH_LOCKED=1 flock /tmp/replog-chaos.lock "$0" "$@"
fi

ROOT=$(pwd)
OUT=target/bench
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
NATS_OUT=$OUT/nats.jsonl
: >"$RESULTS"
: >"$NATS_OUT"
SECS=${BENCH_SECONDS:-20}
WARMUP=${BENCH_WARMUP_SECONDS:-5}
SAT_100=${BENCH_RECORDS_100:-4000000}
SAT_1K=${BENCH_RECORDS_1K:-600000}
FAILOVERS=${BENCH_FAILOVERS:-3}
IDLE_N=${BENCH_IDLE_PARTITIONS:-10000}
if [ -n "${BENCH_QUICK:-}" ]; then
  SECS=5 WARMUP=${BENCH_WARMUP_SECONDS:-2} SAT_100=200000 SAT_1K=50000 FAILOVERS=1 IDLE_N=${BENCH_IDLE_PARTITIONS:-1000}
fi
PEER=${NATS_PEER:-}
if [ -z "$PEER" ]; then
  for d in ../shared/peers /work/shared/peers; do [ -x "$d/run-nats-bench.sh" ] && PEER=$d && break; done
fi
ISOLATE=${BENCH_ISOLATE:-1}
if [ "$ISOLATE" = 1 ] && { [ "$(id -u)" != 0 ] || ! command -v iptables >/dev/null; }; then
  echo "bench: not root or no iptables: the isolation failover is skipped" >&2
  ISOLATE=0
fi

cargo build --release -p replog-node -p replog-client --bins
[ "$ISOLATE" = 1 ] && cargo build --release -p replog-chaos --bin chaos
R=target/release/replog

export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-bench.XXXXXX)}"
cleanup() {
  [ "$ISOLATE" = 1 ] && target/release/chaos net heal >/dev/null 2>&1 || true
  ops/cluster.sh down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the machine -----------------------------------------------------------
{
  echo "{\"machine\": {"
  echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"commit\": \"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+dirty')\","
  echo "  \"cpu\": \"$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)\","
  echo "  \"cores\": $(nproc),"
  echo "  \"mem_gb\": $(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo),"
  echo "  \"kernel\": \"$(uname -r)\","
  echo "  \"fs\": \"$(df -T "$REPLOG_CLUSTER_DIR" | awk 'NR==2{print $2}')\","
  echo "  \"warmup_s\": $WARMUP,"
  echo "  \"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\""
  echo "}}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' >"$OUT/machine.json"

# --- the disk: 4 KiB writes with O_DSYNC, where the nodes keep their data ----
dsync() {
  local f="$REPLOG_CLUSTER_DIR/dsync.test" n=2000 out secs
  out=$(dd if=/dev/zero of="$f" bs=4k count=$n oflag=dsync 2>&1 | tail -1)
  rm -f "$f"
  secs=$(echo "$out" | sed -E 's/.* copied, ([0-9.]+) s.*/\1/')
  python3 -c "import json; print(json.dumps({'bench':'dd-dsync','bs':4096,'count':$n,'seconds':$secs,'write_us':round($secs/$n*1e6,1),'dd':'''$out'''}))" | tee -a "$RESULTS"
}
dsync

# --- the NATS peer, before the replog cluster starts (not both at once) -----
if [ "${BENCH_NATS:-1}" = 1 ] && [ -n "$PEER" ]; then
  # Saturation figures: its own suite, once, short.
  REPS=1 QUICK=${BENCH_QUICK:+1} OUT="$OUT/nats-suite.jsonl" "$PEER/run-nats-bench.sh" >"$OUT/nats-suite.md" || true
  cat "$OUT/nats-suite.jsonl" >>"$NATS_OUT" 2>/dev/null || true
  # What a run leaves in the page cache is written back to disk in the
  # next half minute, under the next runs' fsyncs: a 10 s NATS run at
  # 100,000/s leaves 400 MB. Every part starts on a quiet disk.
  sync
  # Fixed-rate and one-at-a-time figures, as replog's below.
  export CARGO_TARGET_DIR_NATS=${CARGO_TARGET_DIR_NATS:-/tmp/nats-bench-target}
  NB="$CARGO_TARGET_DIR_NATS/release/nats-bench"
  if [ -x "$NB" ]; then
    "$PEER/nats-cluster.sh" start
    "$NB" --mode setup --reset --size 100 >/dev/null
    for rate in 10000 100000; do
      "$NB" --mode window --size 100 --window 1024 --rate "$rate" --duration-s "$SECS" --label "rate" | tail -1 | tee -a "$NATS_OUT"
    done
    "$NB" --mode sync --size 100 --count 2000 --warmup 100 --label "one-at-a-time" | tail -1 | tee -a "$NATS_OUT"
    "$PEER/nats-cluster.sh" stop
    sync
  fi
else
  echo "bench: NATS peer skipped (BENCH_NATS=0 or no peer folder)" >&2
fi

# --- replog ------------------------------------------------------------------
# Own loopback addresses per node (127.0.0.11-13): needed for isolation, and
# free of a `make run` cluster on 127.0.0.1 (BENCH_PER_NODE_IP=1).
if [ "$ISOLATE" = 1 ] || [ -n "${BENCH_PER_NODE_IP:-}" ]; then export REPLOG_PER_NODE_IP=1; fi
ops/cluster.sh up 3
ip() { if [ "${REPLOG_PER_NODE_IP:-0}" = 1 ]; then echo "127.0.0.$((10 + $1))"; else echo 127.0.0.1; fi; }
export REPLOG_BOOTSTRAP="$(ip 1):7001,$(ip 2):7002,$(ip 3):7003"
run() { # label, then replog bench args; appends the JSON line with the label
  local label=$1
  shift
  echo "bench: $label: replog bench $*" >&2
  $R bench "$@" --output json | tail -1 |
    python3 -c "import json,sys; v=json.loads(sys.stdin.read()); v['label']='$label'; print(json.dumps(v))" |
    tee -a "$RESULTS"
}
# A fixed-rate run: first WARMUP seconds of the same load on the same topic,
# not recorded (a fresh topic's first moments: elections, connections, the
# leaders' first appends), then SECS seconds measured.
rated() { # label, then replog bench args
  local label=$1
  shift
  if [ "$WARMUP" != 0 ]; then
    echo "bench: $label: warm-up of ${WARMUP} s, not recorded" >&2
    $R bench "$@" --duration "$WARMUP" --output json >/dev/null
  fi
  run "$label" "$@" --duration "$SECS"
}
# The load runs send keyless records, as an application's events without
# keys: the producer picks their partitions (sticky partitioning). The
# failover runs name each record's partition in turn: they time every
# partition.
rated rate-10k produce --topic b-rate --partitions 6 --producers 2 --record-size 100 --rate 10000 --partitioner keyless
rated rate-100k produce --topic b-rate --partitions 6 --producers 4 --record-size 100 --rate 100000 --partitioner keyless
rated one-at-a-time produce --topic b-one --partitions 1 --producers 1 --record-size 100 --rate 200 --linger-ms 0
rated e2e-10k e2e --topic b-e2e --partitions 6 --producers 2 --record-size 100 --rate 10000 --partitioner keyless
run max-100B produce --topic b-sat-100 --partitions 6 --producers 4 --record-size 100 --records "$SAT_100" --partitioner keyless
run max-1KiB produce --topic b-sat-1k --partitions 6 --producers 4 --record-size 1024 --records "$SAT_1K" --partitioner keyless
run consume-100B consume --topic b-sat-100 --partitions 6 --record-size 100 --records "$SAT_100"
for i in $(seq 1 "$FAILOVERS"); do
  run "failover-kill-$i" failover --topic "b-fail-kill-$i" --partitions 6 --producers 2 --record-size 100 \
    --rate 2000 --duration 12 --fault kill --fault-after 3 --heal-after 8
done
if [ "$ISOLATE" = 1 ]; then
  for i in $(seq 1 "$FAILOVERS"); do
    run "failover-isolate-$i" failover --topic "b-fail-iso-$i" --partitions 6 --producers 2 --record-size 100 \
      --rate 2000 --duration 14 --fault isolate --fault-after 3 --heal-after 9
  done
fi
for id in 1 2 3; do curl -s "$(ip "$id"):910$id/metrics" 2>/dev/null | grep -E '^replog_storage_(flush|files)' | sed "s/^/node $id: /" || true; done >"$OUT/storage-metrics.txt"
ops/cluster.sh down --purge >/dev/null 2>&1 || true

# --- idle partitions and restart, each on a cluster of its own ----------------
# (they hold the lock already taken here; their clusters use 127.0.0.1)
sub() { env -u REPLOG_CLUSTER_DIR -u REPLOG_PER_NODE_IP -u REPLOG_BOOTSTRAP IDLE_LOCKED=1 RESTART_LOCKED=1 "$@"; }
# A failed idle run leaves its reason as its JSON line; the rest still runs.
sub IDLE_PARTITIONS="$IDLE_N" IDLE_RESTARTS="${BENCH_IDLE_RESTARTS:-3}" ops/bench-idle.sh | tail -1 | tee -a "$RESULTS" || true
sub RESTART_GIB="${BENCH_RESTART_GIB:-1}" ops/bench-restart.sh | tail -1 | tee -a "$RESULTS"
echo "{\"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >"$OUT/load-after.json"

python3 ops/bench_report.py "$OUT" "${BENCH_DOC:-docs/benchmarks.md}"
echo "bench: wrote ${BENCH_DOC:-docs/benchmarks.md}" >&2
