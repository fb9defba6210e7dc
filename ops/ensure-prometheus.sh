#!/usr/bin/env bash
# Makes sure Debian's prometheus package (prometheus and promtool) is
# installed: when either is missing, installs it with apt-get, which needs
# root. Exit status: 0 installed, 3 missing and not installable here (not
# root, or no apt-get), 1 the install failed.
#
# The package's service is never started: this machine runs Prometheus only
# as a process a test or a person starts on loopback (see
# node/tests/t95_prometheus.rs). Where no policy-rc.d keeps apt from starting
# services, one is put in place for the install and removed afterwards.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-prometheus: prometheus is not installed, and installing it needs root (apt-get install prometheus)" >&2
  exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: prometheus is not installed and there is no apt-get to install it" >&2
  exit 3
fi

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# Placed by replog ops/ensure-prometheus.sh for one install.\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

echo "ensure-prometheus: installing Debian's prometheus package" >&2
# Serialized: several tests may ask at once, and apt takes one at a time.
exec 9>/tmp/replog-apt.lock
flock 9
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 || exit 1
fi
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
