#!/usr/bin/env bash
# Delay, jitter and loss on every node-to-node link (tc on $REPLOG_NETEM_DEV,
# default lo, with u32 filters on node address pairs; nothing else is
# shaped). See docs/chaos.md.
#
# usage: chaos-tests/scripts/netem.sh COMMAND
#   on [--delay MS] [--jitter MS] [--loss PCT]   (defaults 100, 25, 5)
#   off                                          remove it
#   show                                         qdiscs, classes and filters
#
# Where the kernel has no sch_netem, `on` falls back to a slow link (HTB
# class at a low rate: queueing delay and tail drops) plus iptables random
# loss on node pairs, and says so.
# A wrapper over `chaos net delay|heal|show` (lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  on) chaos_net delay "${@:2}" ;;
  off) chaos_net heal delay ;;
  show) chaos_net show delay ;;
  *) usage_exit "${1:-}" ;;
esac
