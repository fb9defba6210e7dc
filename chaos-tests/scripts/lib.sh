# shellcheck shell=bash
# Shared by the chaos scripts: where the repository, the ops/cluster.sh
# cluster and the chaos binary are. Sourced, never run.
#
# The network faults themselves are the chaos binary's `net` subcommands
# (chaos-tests/src/net_cmd.rs; `chaos net --help`): the scripts only pass
# their arguments on. The binary is $REPLOG_CHAOS_BIN, else the newer of
# target/release/chaos and target/debug/chaos, else built on first use.
# Nodes come from REPLOG_NODE_IPS ("1=10.0.0.11,2=10.0.0.12,...", for a
# real deployment: run the same command on every host), else from the
# cluster that ops/cluster.sh started ($REPLOG_CLUSTER_DIR/cluster.env;
# start it with REPLOG_PER_NODE_IP=1 so that every node has its own
# address). REPLOG_NETEM_DEV picks the device delays act on (default lo).
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPTS/../.." && pwd -P)
CLUSTER_DIR=${REPLOG_CLUSTER_DIR:-target/replog-cluster}
case "$CLUSTER_DIR" in /*) ;; *) CLUSTER_DIR="$ROOT/$CLUSTER_DIR" ;; esac

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}
note() { echo "${0##*/}: $*" >&2; }

# The script's usage: its header comment, up to the shellcheck directive.
usage() { awk 'NR == 1 { next } /^# shellcheck/ || !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; }

# For an argument no command matched: usage on stdout for help (exit 0),
# else on stderr (exit 2).
usage_exit() {
  case "${1:-}" in
    -h | --help | help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
}

# Prints the path of the chaos binary, building it if there is none.
chaos_bin() {
  if [ -n "${REPLOG_CHAOS_BIN:-}" ]; then
    [ -x "$REPLOG_CHAOS_BIN" ] || die "REPLOG_CHAOS_BIN=$REPLOG_CHAOS_BIN is not an executable"
    echo "$REPLOG_CHAOS_BIN"
    return 0
  fi
  local release=$ROOT/target/release/chaos debug=$ROOT/target/debug/chaos
  if [ -x "$release" ] && { [ ! -x "$debug" ] || [ "$release" -nt "$debug" ]; }; then
    echo "$release"
  elif [ -x "$debug" ]; then
    echo "$debug"
  else
    note "building the chaos binary: cargo build --release -p replog-chaos --bin chaos"
    (cd "$ROOT" && cargo build -q --release -p replog-chaos --bin chaos) >&2 || die "building the chaos binary failed"
    echo "$release"
  fi
}

# Runs `chaos net ARGS...` on the cluster of $CLUSTER_DIR (or REPLOG_NODE_IPS).
chaos_net() {
  local bin
  bin=$(chaos_bin)
  REPLOG_CLUSTER_DIR=$CLUSTER_DIR "$bin" net "$@"
}

# The node count of the ops/cluster.sh cluster.
cluster_size() {
  [ -f "$CLUSTER_DIR/cluster.env" ] || die "no ops/cluster.sh cluster in $CLUSTER_DIR"
  sed -n 's/^N=//p' "$CLUSTER_DIR/cluster.env"
}
