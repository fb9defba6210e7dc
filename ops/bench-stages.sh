#!/usr/bin/env bash
# Where one record's time goes when records are sent one at a time (the
# one-at-a-time run of `make bench`). A fresh local 3-node release cluster
# gets a topic of one partition at RF 3 and 100 B records sent
# STAGES_RATE a second (default 200, as there) with no linger, while `perf sched`
# records every thread's wake-ups for STAGES_SECONDS (default 5). Each
# record is then followed from the SDK clock's wake-up through the leader,
# the followers' fsyncs and back (ops/bench_stages.py), and the median and
# p90 of each stage are printed, with each node's CPU time and context
# switches per record over the same seconds. perf's own recording slows
# every wake-up a little: compare the stages with each other, and the
# total with the bench's p50 printed beside it. Needs perf (installed with
# apt-get where missing, as root). Runs under `flock
# /tmp/replog-chaos.lock`. The last line is JSON. STAGES_BIN_DIR: run the
# replog and replog-node binaries found there instead of this tree's (to
# compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v perf >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "bench-stages: perf is missing; installing it needs root" >&2; exit 1; }
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-tools-generic >/dev/null 2>&1 || true
  command -v perf >/dev/null || { echo "bench-stages: perf could not be installed" >&2; exit 1; }
fi
if [ -n "${STAGES_BIN_DIR:-}" ]; then
  export REPLOG_BIN_DIR="$STAGES_BIN_DIR"
else
  cargo build --release --bins
  export REPLOG_BIN_DIR=target/release
fi
exec 9>/tmp/replog-chaos.lock
flock 9
RATE="${STAGES_RATE:-200}"
SECS="${STAGES_SECONDS:-5}"
export REPLOG_CLUSTER_DIR="${REPLOG_CLUSTER_DIR:-$(mktemp -d /tmp/replog-stages.XXXXXX)}"
OUT=$(mktemp -d /tmp/replog-stages-out.XXXXXX)
trap 'ops/cluster.sh down --purge >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
ops/cluster.sh up 3 >/dev/null
R="$REPLOG_BIN_DIR/replog"
$R topic create stages --partitions 1 --replication-factor 3 >/dev/null
# The first records elect and connect; they are not followed.
$R bench produce --topic stages --partitions 1 --producers 1 --record-size 100 --rate 200 --linger-ms 0 \
  --duration 2 --output json >/dev/null
leader=$($R topic describe stages | awk '$1 == "0" { print $2 }')
pid() { cat "$REPLOG_CLUSTER_DIR/node-$1.pid"; }
followers=$(for n in 1 2 3; do [ "$n" = "$leader" ] || pid "$n"; done | paste -sd' ')
# CPU ticks and context switches of each node, summed over its threads,
# after a line with the time.
usage() {
  date +%s.%N
  for n in 1 2 3; do
    p=$(pid "$n")
    cs=$(cat /proc/"$p"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s }')
    echo "$n $(awk '{ print $14 + $15 }' /proc/"$p"/stat) $cs"
  done
}
$R bench produce --topic stages --partitions 1 --producers 1 --record-size 100 --rate "$RATE" --linger-ms 0 \
  --duration $((SECS + 3)) --output json >"$OUT/bench.json" 2>/dev/null &
bench=$!
# The recording starts once the run is past its own start (its
# connections, its first batch), which the records before were for.
sleep 1.5
usage >"$OUT/before"
perf sched record -o "$OUT/sched.data" -- sleep "$SECS" >/dev/null 2>&1
usage >"$OUT/after"
wait "$bench"
perf sched timehist -i "$OUT/sched.data" -w 2>/dev/null >"$OUT/timehist.txt"
python3 ops/bench_stages.py "$OUT/timehist.txt" "$bench" "$(pid "$leader")" $followers \
  --bench "$OUT/bench.json" --usage "$OUT/before" "$OUT/after" --rate "$RATE" \
  --leader-node "$leader" --clk-tck "$(getconf CLK_TCK)"
