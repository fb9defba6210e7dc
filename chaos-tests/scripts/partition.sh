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
# A wrapper over `chaos net partition|heal|show` (lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  isolate | split | bridge | oneway) chaos_net partition "$@" ;;
  heal | show) chaos_net "$1" partitions ;;
  *) usage_exit "${1:-}" ;;
esac
