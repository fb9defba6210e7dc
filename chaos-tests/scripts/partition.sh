#!/usr/bin/env bash
# Packet-level network partitions between replog nodes (iptables DROP rules
# per pair of node addresses in the chain REPLOG-CHAOS). See docs/chaos.md.
#
# usage: chaos-tests/scripts/partition.sh COMMAND
#   isolate ID            cut node ID off from every other node
#   split A,B C,D,E       groups (comma lists) that cannot reach each other
#   bridge A,B M C,D      A,B and C,D cannot talk; M talks to both sides
#   oneway FROM TO        drop packets FROM -> TO only (TO -> FROM pass)
#   heal                  remove every rule (and the chain and its jumps)
#   show                  list the rules in force
#
# Nodes: REPLOG_NODE_IPS=1=IP,2=IP,... or the ops/cluster.sh cluster started
# with REPLOG_PER_NODE_IP=1 (its cluster.env). Client traffic is never
# matched: only packets between two node addresses are dropped.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case "$cmd" in -h | --help | help) usage; exit 0 ;; esac
require_root
ensure_tools
load_nodes

# Cuts every pair between two comma lists, both ways.
cut_groups() {
  local a b
  for a in ${1//,/ }; do
    for b in ${2//,/ }; do
      [ "$a" = "$b" ] && continue
      drop_link "$a" "$b"
      drop_link "$b" "$a"
    done
  done
}

case "$cmd" in
  isolate)
    [ $# -eq 1 ] || die "usage: partition.sh isolate ID"
    ip_of "$1" >/dev/null
    ensure_chain
    rest=""
    for id in $(node_ids); do [ "$id" = "$1" ] || rest+="${rest:+,}$id"; done
    cut_groups "$1" "$rest"
    echo "isolated node $1 from $rest"
    ;;
  split)
    [ $# -ge 2 ] || die "usage: partition.sh split A,B C,D [E,F ...]"
    ensure_chain
    groups=("$@")
    for ((i = 0; i < ${#groups[@]}; i++)); do
      for ((j = i + 1; j < ${#groups[@]}; j++)); do
        cut_groups "${groups[i]}" "${groups[j]}"
      done
    done
    echo "split into: $*"
    ;;
  bridge)
    [ $# -eq 3 ] || die "usage: partition.sh bridge A,B M C,D"
    ip_of "$2" >/dev/null
    ensure_chain
    cut_groups "$1" "$3"
    echo "bridge: $1 <-> $2 <-> $3"
    ;;
  oneway)
    [ $# -eq 2 ] || die "usage: partition.sh oneway FROM TO"
    ensure_chain
    drop_link "$1" "$2"
    echo "dropping packets $1 -> $2"
    ;;
  heal)
    remove_chain
    echo "partitions healed"
    ;;
  show)
    if ipt -n -L "$CHAIN" >/dev/null 2>&1; then ipt -S "$CHAIN"; else echo "no $CHAIN chain: no partition"; fi
    ;;
  *) usage >&2; exit 2 ;;
esac
