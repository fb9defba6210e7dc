#!/usr/bin/env bash
# Heals every network fault: removes the REPLOG-CHAOS chain and its jumps
# (partitions, one-way drops, fallback loss) and our qdisc (netem). Also
# cleans up after a chaos run that crashed. With --nodes it also resumes
# paused nodes and starts stopped ones of the ops/cluster.sh cluster.
#
# usage: chaos-tests/scripts/heal.sh [--nodes]
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  '' | --nodes) ;;
  *) usage_exit "$1" ;;
esac
chaos_net heal
if [ "${1:-}" = --nodes ]; then
  n=$(cluster_size)
  for ((id = 1; id <= n; id++)); do
    "$ROOT/ops/cluster.sh" resume "$id" 2>/dev/null || "$ROOT/ops/cluster.sh" start "$id"
  done
fi
