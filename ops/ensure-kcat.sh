#!/usr/bin/env bash
# Makes sure kcat (Debian's package, librdkafka's command-line client) is
# installed: when it is missing, installs it with apt-get, which needs
# root. Exit status: 0 installed, 3 missing and not installable here (not
# root, or no apt-get), 1 the install failed. Used by the Kafka protocol
# tests (node/tests/t47_kafka.rs).
set -euo pipefail

if command -v kcat >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-kcat: kcat is not installed, and installing it needs root (apt-get install kcat)" >&2
  exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-kcat: kcat is not installed and there is no apt-get to install it" >&2
  exit 3
fi
echo "ensure-kcat: installing Debian's kcat package" >&2
# Serialized: several tests may ask at once, and apt takes one at a time.
exec 9>/tmp/replog-apt.lock
flock 9
if ! command -v kcat >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat >&2 || exit 1
fi
command -v kcat >/dev/null 2>&1
