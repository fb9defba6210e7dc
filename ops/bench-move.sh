#!/usr/bin/env bash
# Produce latency while a partition moves, with and without the move
# throttle (docs/membership.md, "Throttling moves").
#
# For each case a fresh 3-node cluster (automatic balancing off, so that
# only the move asked for runs): a 1-replica partition `big` is filled
# with MOVE_MB MiB; then, at the same moment, `big` starts getting a second
# replica (the move copies all of it, at the case's throttle) and `replog
# bench produce --rate RATE` runs for DURATION seconds on a 3-partition,
# 3-replica topic — DURATION shorter than the move, so that every sample
# is taken during it. One JSON line per case and round: the throttle, how
# long the move took, and the bench's latency percentiles.
#
# environment: BIN_DIR (default target/release), MOVE_MB (default 64),
# RATE (records/s, default 200), RECORD_SIZE (default 1000), DURATION
# (seconds, default 10), CASES (default "baseline 0 2MiB": baseline = no
# move; otherwise the move.throttle value, 0 = unlimited), ROUNDS (default
# 3: the cases in turn, this many times).
#
# It uses ops/cluster.sh's fixed ports: run it alone
# (flock /tmp/replog-chaos.lock ops/bench-move.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN_DIR=${BIN_DIR:-target/release}
MOVE_MB=${MOVE_MB:-64}
RATE=${RATE:-200}
RECORD_SIZE=${RECORD_SIZE:-1000}
DURATION=${DURATION:-10}
CASES=${CASES:-baseline 0 2MiB}
ROUNDS=${ROUNDS:-3}
R="$BIN_DIR/replog"
export REPLOG_BIN_DIR=$BIN_DIR
export REPLOG_CLUSTER_DIR=${REPLOG_CLUSTER_DIR:-/tmp/replog-bench-move}
export REPLOG_NODE_ARGS="--auto-balance false"
export RUST_LOG=${RUST_LOG:-warn}
CLUSTER=ops/cluster.sh

cleanup() { $CLUSTER down --purge >/dev/null 2>&1 || true; }
trap cleanup EXIT

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

for round in $(seq "$ROUNDS"); do
  for case in $CASES; do
    cleanup
    $CLUSTER up 3 >/dev/null
    # 64 KiB records: 16 per MiB.
    $R bench produce --topic big --partitions 1 --replication-factor 1 --record-size 65536 \
      --records $((MOVE_MB * 16)) --producers 1 >/dev/null
    # The latency topic exists and has leaders before the clock starts.
    $R topic create lat --partitions 3 --replication-factor 3 >/dev/null
    leader=$($R --output json topic describe big | field "['partitions'][0]['leader']")
    other=$((leader % 3 + 1))
    out=$(mktemp)
    mover=
    t0=$(date +%s.%N)
    if [ "$case" != baseline ]; then
      $R cluster config set move.throttle "$case" >/dev/null
      $R partition move big 0 --replicas "$leader,$other" --wait >/dev/null &
      mover=$!
    fi
    $R bench produce --topic lat --partitions 3 --replication-factor 3 --record-size "$RECORD_SIZE" --rate "$RATE" --duration "$DURATION" \
      --records 100000000 >"$out"
    move_s=null
    if [ -n "$mover" ]; then
      wait "$mover"
      move_s=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
    fi
    python3 - "$round" "$case" "$move_s" "$out" <<'EOF'
import json, sys
rnd, case, move_s, path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
b = json.loads(open(path).read().strip().splitlines()[-1])
print(json.dumps({"round": int(rnd), "case": case, "move_seconds": None if move_s == "null" else float(move_s),
                  "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"], "p999_ms": b["p999_ms"], "max_ms": b["max_ms"],
                  "records_per_sec": b["records_per_sec"], "errors": b.get("errors")}))
EOF
    rm -f "$out"
  done
done
