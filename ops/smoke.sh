#!/usr/bin/env bash
# Smoke test of the README's first five minutes, from the same commands a
# new user types: `make run`, create a topic, produce, consume, kill a node,
# produce and consume again, `make stop`. Exits non-zero on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

# A directory of its own unless given one; deleted after a pass (each run
# writes about 1.5 GB), kept after a failure for its logs.
own_dir=0
if [ -z "${REPLOG_CLUSTER_DIR:-}" ]; then
  REPLOG_CLUSTER_DIR=$(mktemp -d /tmp/replog-smoke.XXXXXX)
  own_dir=1
fi
export REPLOG_CLUSTER_DIR
R=target/release/replog
cleanup() {
  local rc=$?
  ops/cluster.sh down >/dev/null 2>&1 || true
  if [ "$rc" = 0 ] && [ "$own_dir" = 1 ]; then
    rm -rf -- "${REPLOG_CLUSTER_DIR:?}"
  elif [ "$rc" != 0 ]; then
    echo "smoke: logs and data kept in $REPLOG_CLUSTER_DIR" >&2
  fi
}
trap cleanup EXIT

# Everything this script and the CLI print on stderr is also kept, so that a
# failure ends with the failing command's own error after the nodes' logs
# (CI shows the end of the output).
exec 9>&2 2> >(tee -a "$REPLOG_CLUSTER_DIR/smoke.err" >&9)
fail() {
  for f in "$REPLOG_CLUSTER_DIR"/node-*.log; do echo "--- $f"; tail -20 "$f"; done >&9
  echo "--- the smoke's stderr (last lines)" >&9
  tail -15 "$REPLOG_CLUSTER_DIR/smoke.err" >&9
  echo "smoke: FAIL: $*" >&9
  exit 1
}

make run
$R cluster status
$R topic create demo --partitions 3 --replication-factor 3
seq 1 100 | $R produce demo --output json > "$REPLOG_CLUSTER_DIR/acks.json"
[ "$(wc -l < "$REPLOG_CLUSTER_DIR/acks.json")" -eq 100 ] || fail "expected 100 acknowledgements"
got=$($R consume demo --from-beginning --max-messages 100 --timeout-ms 10000 | sort -n | tr '\n' ' ')
want=$(seq 1 100 | tr '\n' ' ')
[ "$got" = "$want" ] || fail "consumed records differ: $got"

# Kafka clients on the same topic (docs/kafka.md): kcat reads what the CLI
# produced, and the CLI reads what kcat produced.
bash ops/ensure-kcat.sh || fail "kcat is needed for the Kafka tour (ops/ensure-kcat.sh)"
got=$(timeout 60 kcat -b 127.0.0.1:9091 -C -t demo -o beginning -e -q | sort -n | tr '\n' ' ')
[ "$got" = "$want" ] || fail "kcat -C read: $got"
$R topic create demo-kafka --partitions 1 --replication-factor 3
printf 'k1\tfrom-kcat-1\nk2\tfrom-kcat-2\n' | timeout 60 kcat -b 127.0.0.1:9092 -P -t demo-kafka -K '\t' -z zstd
got=$($R consume demo-kafka --from-beginning --max-messages 2 --timeout-ms 10000 | tr '\n' ' ')
[ "$got" = "from-kcat-1 from-kcat-2 " ] || fail "kcat -P then replog consume: $got"

# A consumer group commits as it goes: a second run continues where the
# first stopped, and together they read every record once.
$R consume demo --group smoke --from-beginning --max-messages 40 > "$REPLOG_CLUSTER_DIR/group-1.txt"
$R consume demo --group smoke --max-messages 100 --timeout-ms 5000 > "$REPLOG_CLUSTER_DIR/group-2.txt"
got=$(cat "$REPLOG_CLUSTER_DIR"/group-[12].txt | sort -n | tr '\n' ' ')
[ "$got" = "$want" ] || fail "consume --group, two runs: $got"
$R group describe smoke --output json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["members"] == [] and all(p["lag"] == 0 for p in d["partitions"]), d
' || fail "group describe smoke: expected no members and lag 0"

# Queue group: two consumers share the 100 events, each acknowledged once.
$R queue consume demo --group smoke-queue --max-messages 50 --timeout-ms 15000 > "$REPLOG_CLUSTER_DIR/queue-a.txt" &
qa=$!
$R queue consume demo --group smoke-queue --max-messages 50 --timeout-ms 15000 > "$REPLOG_CLUSTER_DIR/queue-b.txt" || fail "queue consume"
wait $qa || fail "queue consume"
got=$(cat "$REPLOG_CLUSTER_DIR"/queue-[ab].txt | sort -n | tr '\n' ' ')
[ "$got" = "$want" ] || fail "queue consumers got: $got"
$R queue describe demo --group smoke-queue --output json | python3 -c '
import json, sys
d = json.load(sys.stdin)
ps = d["partitions"]
assert sum(p["acked"] for p in ps) == 100 and all(p["in_flight"] == 0 and p["dead_lettered"] == 0 and p["redelivered"] == 0 for p in ps), d
' || fail "queue describe"

# acks=none: each line is acknowledged without an offset (none exists yet
# when the broker answers), printed as null rather than made up.
$R topic create demo-none --partitions 1 --replication-factor 3
seq 1 5 | $R produce demo-none --acks none --output json > "$REPLOG_CLUSTER_DIR/acks-none.json"
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 5 and all("offset" in r and r["offset"] is None for r in rows), rows
' "$REPLOG_CLUSTER_DIR/acks-none.json" || fail "acks=none: expected 5 lines with \"offset\":null"

# `cluster.sh kill` and `stop` return only once the node has exited with
# every thread, so `start` can follow at once. Under write load some thread
# is often inside an fsync when SIGKILL lands and outlives the main thread,
# holding the ports, so the nodes are killed and restarted while a producer
# keeps them busy (a restarted loop: the bench gives up when its node dies).
all_nodes=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
stop_file=$(mktemp -u /tmp/replog-smoke-load.XXXXXX)
( while [ ! -e "$stop_file" ]; do
    REPLOG_BOOTSTRAP=$all_nodes $R bench produce --topic demo-load --records 4000 --record-size 50000 \
      --producers 4 --output json >/dev/null 2>&1 || true
  done ) &
load=$!
stop_load() { touch "$stop_file"; wait "$load" || true; rm -f "$stop_file"; }
for round in 1 2 3 4 5 6 7 8; do
  id=$((round % 3 + 1))
  # Mostly SIGKILL, where the race is most likely; every fourth a graceful stop.
  how="kill"
  [ $((round % 4)) = 0 ] && how=stop
  ops/cluster.sh "$how" "$id"
  if (exec 3<>"/dev/tcp/127.0.0.1/700$id") 2>/dev/null; then
    stop_load
    fail "node $id still listens on 127.0.0.1:700$id after 'cluster.sh $how $id' returned"
  fi
  ops/cluster.sh start "$id" || { stop_load; fail "'cluster.sh start $id' right after '$how $id'"; }
done
stop_load

# Kill the node that leads partition 0; the cluster keeps working.
leader=$($R topic describe demo --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"][0]["leader"])')
ops/cluster.sh kill "$leader"
export REPLOG_BOOTSTRAP=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
seq 101 200 | $R produce demo >/dev/null || fail "produce after killing node $leader"
n=$($R consume demo --from-beginning --max-messages 200 --timeout-ms 10000 | wc -l)
[ "$n" -eq 200 ] || fail "expected 200 records after the kill, got $n"
$R cluster status --output json | python3 -c "
import json,sys
s=json.load(sys.stdin)
dead=[n['id'] for n in s['nodes'] if not n['alive']]
assert dead==[$leader], f'expected only node $leader down, got {dead}'
" || fail "cluster status does not show node $leader down"
ops/cluster.sh start "$leader"

# Membership (docs/membership.md): a fourth node joins and is given its
# share, every node restarts in turn, then the new node is decommissioned;
# nothing produced is lost.
ops/cluster.sh join 4 || fail "cluster.sh join 4"
$R cluster balance --wait >/dev/null || fail "cluster balance"
n4=$($R cluster status --output json | python3 -c 'import json,sys; print([n["replica_count"] for n in json.load(sys.stdin)["nodes"] if n["id"]==4][0])')
[ "$n4" -gt 0 ] || fail "node 4 holds no replica after the balance"
ops/cluster.sh roll || fail "cluster.sh roll"
seq 201 300 | $R produce demo >/dev/null || fail "produce after the roll"
ops/cluster.sh decommission 4 >/dev/null || fail "cluster.sh decommission 4"
n=$($R consume demo --from-beginning --max-messages 300 --timeout-ms 10000 | wc -l)
[ "$n" -eq 300 ] || fail "expected 300 records after join, roll and decommission, got $n"
make stop
echo "smoke: 1 passed, 0 failed"
