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
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case "$cmd" in -h | --help | help) usage; exit 0 ;; esac
require_root
ensure_tools

case "$cmd" in
  on)
    delay=100 jitter=25 loss=5
    while [ $# -gt 0 ]; do
      case "$1" in
        --delay) delay=$2; shift 2 ;;
        --jitter) jitter=$2; shift 2 ;;
        --loss) loss=$2; shift 2 ;;
        *) die "unknown option '$1'" ;;
      esac
    done
    [[ "$delay" =~ ^[0-9]+$ && "$jitter" =~ ^[0-9]+$ && "$loss" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "numbers please"
    load_nodes
    remove_qdisc
    tc qdisc add dev "$NETEM_DEV" root handle "$TC_HANDLE" htb
    if tc class add dev "$NETEM_DEV" parent "$TC_HANDLE" classid "${TC_HANDLE}1" htb rate 10gbit quantum 60000 &&
      tc qdisc add dev "$NETEM_DEV" parent "${TC_HANDLE}1" handle 7e58: netem delay "${delay}ms" "${jitter}ms" loss "${loss}%" 2>/dev/null; then
      mode="netem delay ${delay}ms±${jitter}ms loss ${loss}%"
    else
      remove_qdisc
      tc qdisc add dev "$NETEM_DEV" root handle "$TC_HANDLE" htb
      rate=$((64 * 8 * 1000 / (delay > 0 ? delay : 1)))
      ((rate < 256)) && rate=256
      ((rate > 8192)) && rate=8192
      tc class add dev "$NETEM_DEV" parent "$TC_HANDLE" classid "${TC_HANDLE}1" htb rate "${rate}kbit" ceil "${rate}kbit"
      tc qdisc add dev "$NETEM_DEV" parent "${TC_HANDLE}1" handle 7e58: pfifo limit 64
      ensure_chain
      p=$(awk -v l="$loss" 'BEGIN { printf "%.4f", l / 100 }')
      for a in $(node_ids); do
        for b in $(node_ids); do
          [ "$a" = "$b" ] && continue
          ipt -A "$CHAIN" -s "$(ip_of "$a")/32" -d "$(ip_of "$b")/32" -m statistic --mode random --probability "$p" \
            -m comment --comment "$COMMENT" -j DROP
        done
      done
      mode="no sch_netem in this kernel: shaped to ${rate}kbit + ${loss}% random loss"
    fi
    # Unclassified traffic bypasses HTB (no default class); node pairs only.
    for a in $(node_ids); do
      for b in $(node_ids); do
        [ "$a" = "$b" ] && continue
        tc filter add dev "$NETEM_DEV" parent "$TC_HANDLE" protocol ip prio 1 u32 \
          match ip src "$(ip_of "$a")/32" match ip dst "$(ip_of "$b")/32" flowid "${TC_HANDLE}1"
      done
    done
    echo "$mode on every link between nodes $(node_ids)on $NETEM_DEV"
    ;;
  off)
    remove_qdisc
    # The fallback's loss rules live in the chain; drop only those.
    if ipt -n -L "$CHAIN" >/dev/null 2>&1; then
      ipt -S "$CHAIN" | grep -e '--mode random' | sed 's/^-A /-D /' | while read -r rule; do
        # shellcheck disable=SC2086
        ipt $rule
      done
    fi
    echo "netem off"
    ;;
  show)
    tc qdisc show dev "$NETEM_DEV"
    tc class show dev "$NETEM_DEV"
    tc filter show dev "$NETEM_DEV"
    ;;
  *) usage >&2; exit 2 ;;
esac
