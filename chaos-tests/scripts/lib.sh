# shellcheck shell=bash
# Shared by the chaos scripts: node addresses, root and tool checks, and the
# iptables chain every packet fault lives in. Sourced, never run.
#
# Node addresses come from REPLOG_NODE_IPS ("1=10.0.0.11,2=10.0.0.12,...",
# for a real deployment: run the same command on every host), else from the
# cluster that ops/cluster.sh started ($REPLOG_CLUSTER_DIR/cluster.env; start
# it with REPLOG_PER_NODE_IP=1 so that every node has its own address).
#
# What is touched, and nothing else: the chain $CHAIN (default REPLOG-CHAOS),
# jumped to from INPUT and OUTPUT (for loopback nodes only for 127.0.0.0/8
# traffic on lo), and the root qdisc with handle 7e57: on $NETEM_DEV.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$SCRIPTS/../.." && pwd -P)
CHAIN=${REPLOG_CHAOS_CHAIN:-REPLOG-CHAOS}
COMMENT=replog-chaos
TC_HANDLE=7e57:
NETEM_DEV=${REPLOG_NETEM_DEV:-lo}
CLUSTER_DIR=${REPLOG_CLUSTER_DIR:-target/replog-cluster}
case "$CLUSTER_DIR" in /*) ;; *) CLUSTER_DIR="$ROOT/$CLUSTER_DIR" ;; esac

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}
note() { echo "${0##*/}: $*" >&2; }

require_root() {
  [ "$(id -u)" = 0 ] || die "needs root (iptables, tc)"
}

# Installs iptables and iproute2 (tc) with apt-get if either is missing.
ensure_tools() {
  command -v iptables >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "iptables/tc missing and no apt-get; install iptables and iproute2"
  note "installing iptables and iproute2 with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables iproute2; } >&2 ||
    die "apt-get install iptables iproute2 failed"
}

declare -A NODE_IP=()

# Fills NODE_IP[id]=ip from REPLOG_NODE_IPS or the cluster's cluster.env.
load_nodes() {
  local list="" entry id addr
  if [ -n "${REPLOG_NODE_IPS:-}" ]; then
    list=$REPLOG_NODE_IPS
  elif [ -f "$CLUSTER_DIR/cluster.env" ]; then
    list=$(sed -n 's/^INITIAL_CLUSTER=//p' "$CLUSTER_DIR/cluster.env")
  fi
  [ -n "$list" ] || die "no nodes: set REPLOG_NODE_IPS=1=IP,2=IP,... or start a cluster with REPLOG_PER_NODE_IP=1 ops/cluster.sh up"
  for entry in ${list//,/ }; do
    id=${entry%%=*}
    addr=${entry#*=}
    addr=${addr%:*}
    [[ "$id" =~ ^[0-9]+$ ]] || die "bad node entry '$entry' (want ID=IP)"
    [[ "$addr" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad address in '$entry' (IPv4 only)"
    NODE_IP[$id]=$addr
  done
  local distinct
  distinct=$(printf '%s\n' "${NODE_IP[@]}" | sort -u | wc -l)
  [ "$distinct" = "${#NODE_IP[@]}" ] ||
    die "nodes share an address (${NODE_IP[*]}): packet faults need one address per node; restart the cluster with REPLOG_PER_NODE_IP=1 ops/cluster.sh up"
}

node_ids() { printf '%s\n' "${!NODE_IP[@]}" | sort -n | tr '\n' ' '; }

ip_of() {
  [ -n "${NODE_IP[$1]:-}" ] || die "unknown node '$1' (nodes: $(node_ids))"
  echo "${NODE_IP[$1]}"
}

all_loopback() {
  local ip
  for ip in "${NODE_IP[@]}"; do [[ "$ip" == 127.* ]] || return 1; done
}

# The match of the jumps into the chain: loopback clusters only send
# 127.0.0.0/8 traffic on lo through it; real hosts send everything (the
# chain's rules name node address pairs, so other traffic passes).
jump_match() {
  local hook=$1
  if all_loopback; then
    if [ "$hook" = INPUT ]; then echo "-i lo -s 127.0.0.0/8 -d 127.0.0.0/8"; else echo "-o lo -s 127.0.0.0/8 -d 127.0.0.0/8"; fi
  fi
}

ipt() { iptables -w "$@"; }

# Creates the chain and the jumps if they are not there.
ensure_chain() {
  ipt -n -L "$CHAIN" >/dev/null 2>&1 || ipt -N "$CHAIN"
  local hook m
  for hook in INPUT OUTPUT; do
    m=$(jump_match "$hook")
    # shellcheck disable=SC2086 # m is a list of words
    ipt -C "$hook" $m -j "$CHAIN" 2>/dev/null || ipt -I "$hook" 1 $m -j "$CHAIN"
  done
}

# Drops packets from node $1 to node $2.
drop_link() {
  local a b
  a=$(ip_of "$1")
  b=$(ip_of "$2")
  ipt -A "$CHAIN" -s "$a/32" -d "$b/32" -m comment --comment "$COMMENT" -j DROP
}

# Removes every rule, the jumps and the chain (also those of a crashed chaos
# run: both jump forms are tried).
remove_chain() {
  local hook m
  for hook in INPUT OUTPUT; do
    for m in "$( [ "$hook" = INPUT ] && echo "-i lo" || echo "-o lo") -s 127.0.0.0/8 -d 127.0.0.0/8" ""; do
      # shellcheck disable=SC2086
      while ipt -C "$hook" $m -j "$CHAIN" 2>/dev/null; do ipt -D "$hook" $m -j "$CHAIN"; done
    done
  done
  if ipt -n -L "$CHAIN" >/dev/null 2>&1; then
    ipt -F "$CHAIN"
    ipt -X "$CHAIN"
  fi
}

our_qdisc() { tc qdisc show dev "$NETEM_DEV" | grep -q " $TC_HANDLE root"; }

remove_qdisc() {
  if our_qdisc; then tc qdisc del dev "$NETEM_DEV" root handle "$TC_HANDLE"; fi
}
