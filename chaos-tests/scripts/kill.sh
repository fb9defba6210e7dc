#!/usr/bin/env bash
# SIGKILL a node of the ops/cluster.sh cluster, optionally restarting it on
# its data after a while.
#
# usage: chaos-tests/scripts/kill.sh ID [--restart-after SECONDS]
#        chaos-tests/scripts/kill.sh all [--restart-after SECONDS]
#
# On a real host the equivalent is `systemctl kill -s SIGKILL replog-node`
# then `systemctl start replog-node` (see docs/chaos.md).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] || die "usage: kill.sh ID|all [--restart-after SECONDS]"
target=$1
after=""
if [ "${2:-}" = --restart-after ]; then
  after=${3:?--restart-after needs seconds}
fi
ids=$target
if [ "$target" = all ]; then
  n=$(cluster_size)
  ids=$(seq 1 "$n")
fi
for id in $ids; do "$ROOT/ops/cluster.sh" kill "$id"; done
if [ -n "$after" ]; then
  sleep "$after"
  for id in $ids; do "$ROOT/ops/cluster.sh" start "$id"; done
fi
