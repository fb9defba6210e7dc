#!/usr/bin/env bash
# Heals every network fault: removes the REPLOG-CHAOS chain and its jumps
# (partitions, one-way drops, fallback loss) and our qdisc (netem). Also
# cleans up after a chaos run that crashed. With --nodes it also resumes
# paused nodes and starts stopped ones of the ops/cluster.sh cluster.
#
# usage: chaos-tests/scripts/heal.sh [--nodes]
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

require_root
ensure_tools
remove_chain
remove_qdisc
echo "network healed"
if [ "${1:-}" = --nodes ]; then
  [ -f "$CLUSTER_DIR/cluster.env" ] || die "no ops/cluster.sh cluster in $CLUSTER_DIR"
  n=$(sed -n 's/^N=//p' "$CLUSTER_DIR/cluster.env")
  for ((id = 1; id <= n; id++)); do
    "$ROOT/ops/cluster.sh" resume "$id" 2>/dev/null || "$ROOT/ops/cluster.sh" start "$id"
  done
fi
