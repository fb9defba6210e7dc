#!/usr/bin/env bash
# Local replog cluster manager: runs replog-node processes on loopback.
# See usage() below, or `ops/cluster.sh --help`.
#
# Layout under $REPLOG_CLUSTER_DIR (default target/replog-cluster):
#   cluster.env          N, the --initial-cluster string, the address mode
#                        and the node args used at `up`
#   node-ID/data/        data dir of node ID
#   node-ID.log          stdout+stderr of node ID (appended across restarts)
#   node-ID.pid          pid of node ID while it runs
#   tls/                 with `up --tls`: ca, node and client certificates
#
# Node ID (1..9) listens for gRPC on 127.0.0.1:700ID (for its peers on
# 800ID), for Kafka clients on 127.0.0.1:909ID (not with --tls or
# --authorization: the Kafka listener has neither yet) and serves metrics
# and /health on 127.0.0.1:910ID. Opt-in, for
# packet-level fault injection (chaos-tests/scripts/): with REPLOG_PER_NODE_IP=1 at `up`, node ID uses its
# own loopback address 127.0.0.(10+ID) instead (127.0.0.11:7001, ...), and
# sends its peer traffic from it; the choice is kept in cluster.env.
#
# Safety: only PIDs read from our own pid files are ever signalled, and only
# after /proc/PID/cmdline shows that they are the replog-node of that node id.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: ops/cluster.sh COMMAND [ARGS]

commands:
  up [N] [--tls]   start an N-node cluster (N in 1..9; default: the N of the
                   existing cluster, else 3) and wait until every node's
                   /health names a controller leader; with --tls, nodes
                   speak mutual TLS to each other and TLS with client
                   certificates to clients (a throwaway CA, node and client
                   certificates in $REPLOG_CLUSTER_DIR/tls/, made with
                   `replog tls init`)
  down [--purge]   stop every node gracefully (SIGTERM, SIGKILL after 10 s);
                   data is kept unless --purge, which deletes the state dir
  status           table of nodes: id, pid, state, gRPC address, health
  kill ID          SIGKILL node ID; returns once it has exited (ports free)
  stop ID          stop node ID gracefully (SIGTERM, SIGKILL after 10 s);
                   returns once it has exited
  start ID         restart a stopped or killed node ID on its existing data
  pause ID         SIGSTOP node ID
  resume ID        SIGCONT node ID
  join ID          start a new node ID (not yet in the cluster) that joins the
                   running cluster (replog-node --join); kept in cluster.env,
                   so stop/start/roll treat it like the others
  roll             restart every running node one at a time: graceful stop
                   (it hands its leaderships over first), start, then wait
                   until its /ready says it has caught up
  decommission ID  move every replica off node ID (replog node decommission
                   --wait), then stop it and forget it

Node ID listens for gRPC on 127.0.0.1:700ID, for Kafka clients on
127.0.0.1:909ID (not with --tls) and for metrics on 127.0.0.1:910ID.
With REPLOG_PER_NODE_IP=1 at `up`, node ID uses 127.0.0.(10+ID) instead of
127.0.0.1 (e.g. 127.0.0.11:7001), so that iptables rules per node pair can
partition the nodes (see chaos-tests/scripts/ and docs/chaos.md).

environment:
  REPLOG_CLUSTER_DIR     state dir (default target/replog-cluster; a relative
                         path is relative to the repository root)
  REPLOG_BIN_DIR         dir holding replog-node (default target/release)
  REPLOG_NODE_ARGS       extra flags for replog-node (word-split); when unset,
                         `start` reuses the ones given to `up`
  REPLOG_HEALTH_TIMEOUT  seconds to wait for /health (default 30)
  REPLOG_PER_NODE_IP     1 at `up`: node ID on 127.0.0.(10+ID) (default 0:
                         every node on 127.0.0.1); remembered in cluster.env
  RUST_LOG               node log filter (default: the node's, info with
                         openraft, sled, h2 and tower at warn)
EOF
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}
note() { echo "cluster.sh: $*" >&2; }

# --- locations --------------------------------------------------------------

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

abs_path() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$ROOT/$1" ;;
  esac
}

DIR=$(abs_path "${REPLOG_CLUSTER_DIR:-target/replog-cluster}")
DIR=${DIR%/}
BIN_DIR=$(abs_path "${REPLOG_BIN_DIR:-target/release}")
BIN="${BIN_DIR%/}/replog-node"
ENV_FILE="$DIR/cluster.env"
# Unset: the node's own default (info, with openraft, sled, h2 and tower at
# warn; openraft's info logs every election of every partition).
[ -n "${RUST_LOG:-}" ] || unset RUST_LOG

# --- timeouts (seconds) -----------------------------------------------------

# How long `up` and `start` wait for every /health to answer 200.
HEALTH_TIMEOUT_S=${REPLOG_HEALTH_TIMEOUT:-30}
HEALTH_POLL_S=0.1
# Graceful stop: how long a node gets after SIGTERM before SIGKILL.
STOP_TIMEOUT_S=10
# After SIGKILL: how long to wait for the process (every thread) to exit;
# `kill` and `stop` return only then, so that `start` can follow at once.
KILL_TIMEOUT_S=5
# How long to wait for a freshly launched node to write its pid file.
LAUNCH_TIMEOUT_S=5

[[ "$HEALTH_TIMEOUT_S" =~ ^[0-9]+$ ]] || die "REPLOG_HEALTH_TIMEOUT must be a whole number of seconds"

# 0: every node on 127.0.0.1 (the default, the contract); 1: node ID on its
# own loopback address 127.0.0.(10+ID). Set by `up` from REPLOG_PER_NODE_IP
# and kept in cluster.env, so later commands address the same nodes.
PER_NODE_IP=0

node_ip() {
  if [ "$PER_NODE_IP" = 1 ]; then echo "127.0.0.$((10 + $1))"; else echo "127.0.0.1"; fi
}
grpc_addr() { echo "$(node_ip "$1"):700$1"; }
metrics_addr() { echo "$(node_ip "$1"):910$1"; }
kafka_addr() { echo "$(node_ip "$1"):909$1"; }
pid_file() { echo "$DIR/node-$1.pid"; }
log_file() { echo "$DIR/node-$1.log"; }
data_dir() { echo "$DIR/node-$1/data"; }

# --- cluster.env ------------------------------------------------------------

# Parsed, never sourced: it is data, not code.
N=""
INITIAL_CLUSTER=""
NODE_ARGS=""
# Nodes added by `join`, space separated.
JOINED=""
# Nodes removed by `decommission`: never started again.
REMOVED=""

load_env() {
  [ -f "$ENV_FILE" ] || return 1
  local line key val
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    key=${line%%=*}
    val=${line#*=}
    case "$key" in
      N) N=$val ;;
      INITIAL_CLUSTER) INITIAL_CLUSTER=$val ;;
      NODE_ARGS) NODE_ARGS=$val ;;
      PER_NODE_IP) PER_NODE_IP=$val ;;
      JOINED) JOINED=$val ;;
      REMOVED) REMOVED=$val ;;
    esac
  done <"$ENV_FILE"
  [[ "$N" =~ ^[1-9]$ ]] || die "$ENV_FILE is corrupt (N='$N'); fix it or run: ops/cluster.sh down --purge"
  return 0
}

save_env() {
  mkdir -p "$DIR"
  local tmp="$ENV_FILE.tmp.$$"
  {
    echo "# written by ops/cluster.sh; read by it (parsed, not sourced)"
    echo "N=$N"
    echo "INITIAL_CLUSTER=$INITIAL_CLUSTER"
    echo "NODE_ARGS=$NODE_ARGS"
    echo "PER_NODE_IP=$PER_NODE_IP"
    echo "JOINED=$JOINED"
    echo "REMOVED=$REMOVED"
  } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
}

require_env() {
  load_env || die "no cluster in $DIR (cluster.env missing); run: ops/cluster.sh up"
}

# Every node id the state dir knows of: 1..N, and any id that still has a
# pid file (e.g. from a cluster.env that was edited by hand).
known_ids() {
  local ids="" i f
  if [ -n "$N" ]; then
    for ((i = 1; i <= N; i++)); do ids+=" $i"; done
  fi
  for i in $JOINED; do ids+=" $i"; done
  for f in "$DIR"/node-[1-9].pid; do
    [ -e "$f" ] || continue
    f=${f##*/node-}
    ids+=" ${f%.pid}"
  done
  # shellcheck disable=SC2086
  printf '%s\n' $ids | sort -nu | while read -r i; do
    [[ " $REMOVED " == *" $i "* ]] && [ ! -e "$DIR/node-$i.pid" ] && continue
    printf '%s ' "$i"
  done
}

check_id() {
  [[ "${1:-}" =~ ^[1-9]$ ]] || die "node id must be 1..9 (got '${1:-}')"
}

# --- processes --------------------------------------------------------------

# Millisecond clock (bash 5 EPOCHREALTIME; SECONDS is too coarse for deadlines).
now_ms() {
  local t=${EPOCHREALTIME//[.,]/}
  echo $((10#$t / 1000))
}
deadline_ms() { echo $(($(now_ms) + $1 * 1000)); }
past() { (($(now_ms) >= $1)); }

# Prints the pid of node $1 if its pid file names a live replog-node for that
# node id; removes a stale pid file (with a note) and prints nothing otherwise.
live_pid() {
  local id=$1 f pid cmd
  f=$(pid_file "$id")
  [ -f "$f" ] || return 0
  pid=$(head -n1 "$f" 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ]; then
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    if [[ "$cmd" == *replog-node* && "$cmd" == *" --id $id "* && "$cmd" == *" $(data_dir "$id") "* ]]; then
      echo "$pid"
      return 0
    fi
  fi
  note "node $id: stale pid file (pid '${pid}' is not this node's replog-node); removed"
  rm -f "$f"
}

# R (running, sleeping, ...), T (stopped/paused), Z (zombie) or empty if gone.
proc_state() {
  local s
  s=$(awk '/^State:/ {print $2; exit}' "/proc/$1/status" 2>/dev/null || true)
  case "$s" in
    '') echo "" ;;
    T | t) echo T ;;
    Z | X) echo Z ;;
    *) echo R ;;
  esac
}

# Whether pid $1 has exited. A zombie is not enough: when the main thread of
# a multi-threaded process exits first (SIGKILL reaches every thread, but a
# thread in the middle of an fsync finishes it before it dies), /proc shows
# the process as a zombie while its other threads still hold its files,
# listening sockets included, and a `start` at once would find the ports in
# use. The process is gone once no thread but the zombie main thread is left.
is_gone() {
  local s threads
  s=$(proc_state "$1")
  [ -z "$s" ] && return 0
  [ "$s" = Z ] || return 1
  threads=$(awk '/^Threads:/ {print $2; exit}' "/proc/$1/status" 2>/dev/null || true)
  [ -z "$threads" ] || [ "$threads" -le 1 ]
}

# Waits up to $2 seconds for every pid in $1 (space separated) to exit.
# Returns 1 if some are still there.
wait_gone() {
  local pids=$1 deadline p left
  deadline=$(deadline_ms "$2")
  while :; do
    left=""
    for p in $pids; do is_gone "$p" || left+=" $p"; done
    [ -z "$left" ] && return 0
    past "$deadline" && return 1
    sleep 0.1
  done
}

# Graceful stop of the given node ids, in parallel: SIGTERM (plus SIGCONT,
# so a paused node can act on it), then SIGKILL after STOP_TIMEOUT_S.
graceful_stop() {
  local id pid pids="" ids_stopped=""
  for id in "$@"; do
    pid=$(live_pid "$id")
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    pids+=" $pid"
    ids_stopped+=" $id:$pid"
  done
  [ -n "$pids" ] || return 0
  local entry
  if ! wait_gone "$pids" "$STOP_TIMEOUT_S"; then
    for entry in $ids_stopped; do
      pid=${entry#*:}
      if ! is_gone "$pid"; then
        note "node ${entry%%:*} (pid $pid) still running ${STOP_TIMEOUT_S} s after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    wait_gone "$pids" "$KILL_TIMEOUT_S" || die "pids$pids did not exit after SIGKILL"
  fi
  for entry in $ids_stopped; do
    id=${entry%%:*}
    rm -f "$(pid_file "$id")"
    echo "stopped node $id (pid ${entry#*:})"
  done
}

require_running() {
  local pid
  pid=$(live_pid "$1")
  [ -n "$pid" ] || die "node $1 is not running"
  echo "$pid"
}

# --- health -----------------------------------------------------------------

ensure_curl() {
  command -v curl >/dev/null 2>&1 && return 0
  note "curl not found; installing it with apt-get"
  command -v apt-get >/dev/null 2>&1 || die "curl is missing and apt-get is not available; install curl"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq install curl; } >&2; then
    die "could not install curl; install it by hand"
  fi
  command -v curl >/dev/null 2>&1 || die "curl still missing after apt-get install"
}

# "200" once node $1 answers /health and knows a controller leader (its body
# names one), "503" while it knows none, "000" if it does not answer. /health
# itself answers 200 whenever the node runs (it is the liveness probe).
# Never via a proxy.
health_code() {
  local body
  body=$(curl -s -f --noproxy '*' --max-time "${2:-1}" "http://$(metrics_addr "$1")/health" 2>/dev/null) \
    || { echo 000; return 0; }
  case "$body" in
    *'"controller_leader":'[0-9]*) echo 200 ;;
    *) echo 503 ;;
  esac
}

# Waits until every node id given answers /health with 200. On timeout, or as
# soon as one of them exits, prints the tail of the failed nodes' logs and
# exits 1.
wait_healthy() {
  local deadline pending="$*" next id pid code dead=""
  deadline=$(deadline_ms "$HEALTH_TIMEOUT_S")
  while [ -n "$pending" ]; do
    next=""
    for id in $pending; do
      pid=$(head -n1 "$(pid_file "$id")" 2>/dev/null || true)
      if [ -z "$pid" ] || is_gone "$pid"; then
        dead+=" $id"
        continue
      fi
      code=$(health_code "$id" 1)
      [ "$code" = 200 ] || next+=" $id"
    done
    pending=${next# }
    [ -n "$dead" ] && break
    [ -z "$pending" ] && break
    past "$deadline" && break
    sleep "$HEALTH_POLL_S"
  done
  [ -z "$pending" ] && [ -z "$dead" ] && return 0

  if [ -n "$dead" ]; then
    for id in $dead; do
      echo "node $id exited before it became healthy; last 20 lines of $(log_file "$id"):" >&2
      tail -n 20 "$(log_file "$id")" >&2 || true
      rm -f "$(pid_file "$id")"
    done
    [ -z "$pending" ] || echo "cluster.sh: stopped waiting; not healthy yet: nodes $pending" >&2
  else
    for id in $pending; do
      echo "node $id: /health not 200 after ${HEALTH_TIMEOUT_S} s; last 20 lines of $(log_file "$id"):" >&2
      tail -n 20 "$(log_file "$id")" >&2 || true
    done
  fi
  echo "cluster.sh: some nodes are not healthy; the others keep running (see: ops/cluster.sh status; stop them with: ops/cluster.sh down)" >&2
  exit 1
}

# --- launching --------------------------------------------------------------

require_bin() {
  [ -x "$BIN" ] || die "replog-node not found at $BIN; build it first with: cargo build --release (or set REPLOG_BIN_DIR)"
}

port_in_use() {
  # A successful connect means something listens there already.
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

check_ports_free() {
  local id p ip
  for id in "$@"; do
    ip=$(node_ip "$id")
    for p in "700$id" "800$id" "909$id" "910$id"; do
      if port_in_use "$ip" "$p"; then
        die "port $ip:$p (node $id) is already in use; is another cluster running (other REPLOG_CLUSTER_DIR)? try: ss -ltnp 'sport = :$p'"
      fi
    done
  done
}

is_joined() { [[ " $JOINED " == *" $1 "* ]]; }

# The address a joining node asks: the first other node that runs.
join_via() {
  local i
  for i in $(known_ids); do
    [ "$i" = "$1" ] && continue
    if [ -n "$(live_pid "$i" 2>/dev/null)" ]; then
      grpc_addr "$i"
      return 0
    fi
  done
  grpc_addr 1
}

# Launches node $1 in the background, in its own session so it outlives this
# script; the exec'd child writes its own pid, so the pid file names the node
# process itself whatever setsid does.
launch_node() {
  local id=$1 args extra
  args=(--id "$id" --listen "$(grpc_addr "$id")" --metrics-listen "$(metrics_addr "$id")" --data-dir "$(data_dir "$id")")
  if is_joined "$id"; then
    args+=(--join "$(join_via "$id")")
  else
    args+=(--initial-cluster "$INITIAL_CLUSTER")
  fi
  read -r -a extra <<<"${REPLOG_NODE_ARGS-$NODE_ARGS}"
  # The Kafka listener has no TLS or SASL yet: the node refuses it beside
  # client TLS or authorization (docs/kafka.md).
  case " ${extra[*]} " in
    *" --tls-cert "* | *" --authorization "*) ;;
    *) args+=(--kafka-listen "$(kafka_addr "$id")") ;;
  esac
  args+=("${extra[@]}")

  mkdir -p "$(data_dir "$id")"
  local pidf log
  pidf=$(pid_file "$id")
  log=$(log_file "$id")
  rm -f "$pidf"
  echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) ops/cluster.sh: RUST_LOG=${RUST_LOG:-(node default)} $BIN ${args[*]}" >>"$log"
  # shellcheck disable=SC2016 # $$ and $@ expand in the child shell
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$BIN" "${args[@]}" >>"$log" 2>&1 </dev/null &
  local deadline
  deadline=$(deadline_ms "$LAUNCH_TIMEOUT_S")
  until [ -s "$pidf" ]; do
    past "$deadline" && die "node $id did not start (no pid file after ${LAUNCH_TIMEOUT_S} s); see $log"
    sleep 0.05
  done
  echo "started node $id (pid $(head -n1 "$pidf")), log $log"
}

# --- status -----------------------------------------------------------------

print_status() {
  local id pid state health s
  printf '%-3s %-8s %-8s %-16s %s\n' ID PID STATE GRPC HEALTH
  for id in $(known_ids); do
    pid=$(live_pid "$id")
    if [ -z "$pid" ]; then
      state=stopped
      pid=-
    else
      s=$(proc_state "$pid")
      case "$s" in T) state=paused ;; *) state=running ;; esac
    fi
    if [ "$state" = stopped ]; then
      health=down
    elif [ "$(health_code "$id" 1)" = 200 ]; then
      health=ok
    else
      health=down
    fi
    printf '%-3s %-8s %-8s %-16s %s\n' "$id" "$pid" "$state" "$(grpc_addr "$id")" "$health"
  done
}

# --- commands ---------------------------------------------------------------

# Writes a throwaway CA and node and client certificates under $DIR/tls
# (once; an existing set is kept) and prints the flags that turn on TLS:
# mutual TLS between nodes, and TLS with client certificates on the client
# port.
tls_args() {
  local tls="$DIR/tls" cli="${BIN_DIR%/}/replog"
  if [ ! -f "$tls/ca.crt" ]; then
    [ -x "$cli" ] || die "--tls needs the replog CLI at $cli to make certificates; build it first with: cargo build --release"
    "$cli" tls init "$tls" >/dev/null || die "could not write certificates to $tls"
  fi
  echo "--peer-tls-cert $tls/node.crt --peer-tls-key $tls/node.key --peer-tls-ca $tls/ca.crt" \
    "--tls-cert $tls/node.crt --tls-key $tls/node.key --tls-ca $tls/ca.crt"
}

cmd_up() {
  local n="" a tls=0
  for a in "$@"; do
    case "$a" in
      -h | --help) usage; exit 0 ;;
      --tls) tls=1 ;;
      [1-9]) [ -z "$n" ] || die "up: N given twice"; n=$a ;;
      *) die "up: N must be 1..9 (got '$a'); usage: ops/cluster.sh up [N] [--tls]" ;;
    esac
  done

  local had_env=0
  if load_env; then had_env=1; fi
  local id running=""
  for id in $(known_ids); do
    [ -n "$(live_pid "$id")" ] && running+=" $id"
  done
  [ -z "$running" ] || die "nodes$running from a previous 'up' are still running; run 'ops/cluster.sh down' first"

  if [ -z "$n" ]; then
    if [ "$had_env" = 1 ]; then n=$N; else n=3; fi
  fi
  if [ "$had_env" = 1 ] && [ "$n" != "$N" ]; then
    die "$DIR holds a $N-node cluster; run 'ops/cluster.sh up $N', or 'ops/cluster.sh down --purge' to start afresh with $n nodes"
  fi

  require_bin
  ensure_curl

  N=$n
  # Addresses are part of the cluster's identity: an existing cluster keeps
  # the mode it was created with.
  local per_ip=${REPLOG_PER_NODE_IP-}
  case "$per_ip" in
    '' | 0 | 1) ;;
    *) die "REPLOG_PER_NODE_IP must be 0 or 1 (got '$per_ip')" ;;
  esac
  if [ "$had_env" = 1 ]; then
    if [ -n "$per_ip" ] && [ "$per_ip" != "$PER_NODE_IP" ]; then
      die "$DIR holds a cluster made with REPLOG_PER_NODE_IP=$PER_NODE_IP; use that, or 'ops/cluster.sh down --purge' to start afresh"
    fi
  else
    PER_NODE_IP=${per_ip:-0}
  fi
  # `up` declares the cluster afresh: its flags are REPLOG_NODE_ARGS as given
  # now; `start` reuses them unless REPLOG_NODE_ARGS is set.
  NODE_ARGS=${REPLOG_NODE_ARGS-}
  if [ "$tls" = 1 ]; then
    mkdir -p "$DIR"
    NODE_ARGS+="${NODE_ARGS:+ }$(tls_args)"
  fi
  export REPLOG_NODE_ARGS=$NODE_ARGS
  INITIAL_CLUSTER=""
  for ((id = 1; id <= N; id++)); do
    INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}$id=$(grpc_addr "$id")"
  done

  local ids
  ids=$(seq 1 "$N" | tr '\n' ' ')
  # shellcheck disable=SC2086
  check_ports_free $ids
  save_env

  # A cluster that grew or shrank: its joined nodes come back too, its
  # decommissioned ones do not.
  ids=$(known_ids)
  for id in $ids; do launch_node "$id"; done
  # shellcheck disable=SC2086
  wait_healthy $ids
  echo
  print_status
  if [ "$tls" = 1 ]; then
    echo
    echo "TLS is on; the CLI needs:"
    echo "  export REPLOG_CLIENT_TLS_CA=$DIR/tls/ca.crt REPLOG_CLIENT_TLS_CERT=$DIR/tls/client.crt REPLOG_CLIENT_TLS_KEY=$DIR/tls/client.key"
  fi
}

cmd_down() {
  local purge=0 a
  for a in "$@"; do
    case "$a" in
      --purge) purge=1 ;;
      *) die "down: unknown argument '$a'; usage: ops/cluster.sh down [--purge]" ;;
    esac
  done
  if [ ! -d "$DIR" ]; then
    echo "no cluster state in $DIR; nothing to stop"
    return 0
  fi
  load_env || true
  # shellcheck disable=SC2046
  graceful_stop $(known_ids)
  if [ "$purge" = 1 ]; then
    # Refuse to delete a directory that does not look like ours.
    local f
    for f in "$DIR"/* "$DIR"/.[!.]*; do
      [ -e "$f" ] || continue
      case "${f##*/}" in
        cluster.env | cluster.env.tmp.* | node-[1-9] | node-[1-9].log | node-[1-9].pid | tls) ;;
        *) die "not purging $DIR: it holds '${f##*/}', which ops/cluster.sh did not create" ;;
      esac
    done
    case "$DIR" in / | "$ROOT" | "$HOME") die "refusing to delete $DIR" ;; esac
    rm -rf -- "${DIR:?}"
    echo "purged $DIR"
  else
    echo "cluster stopped; data kept in $DIR (delete it with: ops/cluster.sh down --purge)"
  fi
}

cmd_status() {
  if ! load_env && ! compgen -G "$DIR/node-[1-9].pid" >/dev/null; then
    echo "no cluster in $DIR (start one with: ops/cluster.sh up)"
    return 0
  fi
  ensure_curl
  print_status
}

cmd_kill() {
  local id=$1 pid
  load_env || true
  pid=$(require_running "$id")
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" "$KILL_TIMEOUT_S" || die "node $id (pid $pid) did not exit after SIGKILL"
  rm -f "$(pid_file "$id")"
  echo "killed node $id (pid $pid)"
}

cmd_stop() {
  local id=$1
  load_env || true
  require_running "$id" >/dev/null
  graceful_stop "$id"
}

cmd_start() {
  local id=$1 pid
  require_env
  if [[ " $REMOVED " == *" $id "* ]]; then
    die "node $id was decommissioned; it cannot come back on its old data (join a fresh node instead)"
  fi
  if [ "$id" -gt "$N" ] && ! is_joined "$id"; then
    die "node $id is not part of this cluster (nodes 1..$N${JOINED:+ and$JOINED}); add it with: ops/cluster.sh join $id"
  fi
  pid=$(live_pid "$id")
  [ -z "$pid" ] || die "node $id is already running (pid $pid)"
  require_bin
  ensure_curl
  check_ports_free "$id"
  launch_node "$id"
  wait_healthy "$id"
  echo "node $id is healthy"
}

cmd_join() {
  local id=$1 pid
  require_env
  if [[ " $REMOVED " == *" $id "* ]]; then
    [ ! -e "$(data_dir "$id")" ] || die "node $id was decommissioned; delete $(data_dir "$id") to join it afresh"
    REMOVED=$(printf '%s\n' "$REMOVED" | tr ' ' '\n' | { grep -vx "$id" || true; } | tr '\n' ' ')
    REMOVED=${REMOVED% }
  elif [ "$id" -le "$N" ] || is_joined "$id"; then
    die "node $id is already part of this cluster; start it with: ops/cluster.sh start $id"
  fi
  pid=$(live_pid "$id")
  [ -z "$pid" ] || die "node $id is already running (pid $pid)"
  require_bin
  ensure_curl
  check_ports_free "$id"
  JOINED="${JOINED:+$JOINED }$id"
  save_env
  launch_node "$id"
  wait_healthy "$id"
  echo "node $id joined the cluster (see: replog cluster status; spread load with: replog cluster balance)"
}

# "200" once node $1's /ready says it has caught up.
ready_code() {
  curl -s -o /dev/null -w '%{http_code}' --noproxy '*' --max-time 1 "http://$(metrics_addr "$1")/ready" 2>/dev/null || true
}

wait_ready() {
  local id=$1 deadline
  deadline=$(deadline_ms "$HEALTH_TIMEOUT_S")
  until [ "$(ready_code "$id")" = 200 ]; do
    past "$deadline" && die "node $id not ready (caught up) after ${HEALTH_TIMEOUT_S} s; see $(log_file "$id") and http://$(metrics_addr "$id")/ready"
    sleep "$HEALTH_POLL_S"
  done
}

cmd_roll() {
  require_env
  require_bin
  ensure_curl
  local id ids="" t0
  for id in $(known_ids); do
    [ -n "$(live_pid "$id")" ] && ids+=" $id"
  done
  [ -n "$ids" ] || die "no node is running"
  for id in $ids; do
    t0=$(now_ms)
    graceful_stop "$id"
    launch_node "$id"
    wait_healthy "$id"
    wait_ready "$id"
    echo "node $id restarted and caught up in $(($(now_ms) - t0)) ms"
  done
  echo "rolled nodes$ids"
}

cmd_decommission() {
  local id=$1 cli="${BIN_DIR%/}/replog" bootstrap="" i
  require_env
  [ -x "$cli" ] || die "replog (the CLI) not found at $cli; build it first"
  for i in $(known_ids); do
    [ "$i" = "$id" ] && continue
    [ -n "$(live_pid "$i")" ] && bootstrap+="${bootstrap:+,}$(grpc_addr "$i")"
  done
  [ -n "$bootstrap" ] || die "no other node is running"
  "$cli" --bootstrap "$bootstrap" node decommission "$id" --wait
  graceful_stop "$id"
  if is_joined "$id"; then
    # shellcheck disable=SC2086 # the list is word-split on purpose
    # (grep finds nothing when this was the only joined node: not a failure)
    JOINED=$(printf '%s\n' $JOINED | { grep -vx "$id" || true; } | tr '\n' ' ')
    JOINED=${JOINED% }
  fi
  REMOVED="${REMOVED:+$REMOVED }$id"
  save_env
  echo "node $id decommissioned and stopped; its data stays in $(data_dir "$id")"
}

cmd_pause() {
  local id=$1 pid
  load_env || true
  pid=$(require_running "$id")
  [ "$(proc_state "$pid")" = T ] && { echo "node $id (pid $pid) is already paused"; return 0; }
  kill -STOP "$pid"
  echo "paused node $id (pid $pid)"
}

cmd_resume() {
  local id=$1 pid
  load_env || true
  pid=$(require_running "$id")
  kill -CONT "$pid"
  echo "resumed node $id (pid $pid)"
}

# --- main -------------------------------------------------------------------

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case "$cmd" in
  -h | --help | help) usage ;;
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status)
    [ $# -eq 0 ] || die "status takes no arguments"
    cmd_status
    ;;
  roll)
    [ $# -eq 0 ] || die "roll takes no arguments"
    cmd_roll
    ;;
  kill | stop | start | pause | resume | join | decommission)
    [ $# -eq 1 ] || die "usage: ops/cluster.sh $cmd ID"
    check_id "$1"
    "cmd_$cmd" "$1"
    ;;
  *)
    echo "cluster.sh: unknown command '$cmd'" >&2
    usage >&2
    exit 2
    ;;
esac
