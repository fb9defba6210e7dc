#!/usr/bin/env bash
# SIGSTOP a node of the ops/cluster.sh cluster (it keeps its sockets and
# looks alive to the kernel, but answers nothing), optionally resuming it
# after a while; `resume` sends SIGCONT.
#
# usage: chaos-tests/scripts/pause.sh ID [--for SECONDS]
#        chaos-tests/scripts/pause.sh resume ID
#
# On a real host: `systemctl kill -s SIGSTOP replog-node` / `-s SIGCONT`.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

[ $# -ge 1 ] || die "usage: pause.sh ID [--for SECONDS] | pause.sh resume ID"
if [ "$1" = resume ]; then
  exec "$ROOT/ops/cluster.sh" resume "${2:?usage: pause.sh resume ID}"
fi
"$ROOT/ops/cluster.sh" pause "$1"
if [ "${2:-}" = --for ]; then
  sleep "${3:?--for needs seconds}"
  "$ROOT/ops/cluster.sh" resume "$1"
fi
