#!/usr/bin/env bash
# Makes sure a Python with confluent-kafka (the Python client built on
# librdkafka, from PyPI) is at hand for the Kafka protocol tests: a virtual
# environment in target/kafka-py, made on first use. Prints the path of its
# python on stdout. Exit status: 0 ready, 3 not installable here (no
# python3 with venv), 1 the install failed.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=2.16.1
VENV=${REPLOG_KAFKA_PY:-$PWD/target/kafka-py}
PY=$VENV/bin/python

ready() { [ -x "$PY" ] && "$PY" -c "import confluent_kafka" >/dev/null 2>&1; }

if ready; then
  echo "$PY"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "ensure-confluent-kafka: no python3 to install confluent-kafka with" >&2
  exit 3
fi
# Serialized: several tests may ask at once.
mkdir -p "$(dirname "$VENV")"
exec 9>"$(dirname "$VENV")/.kafka-py.lock"
flock 9
if ! ready; then
  echo "ensure-confluent-kafka: installing confluent-kafka $VERSION into $VENV" >&2
  python3 -m venv "$VENV" >&2 || { echo "ensure-confluent-kafka: python3 -m venv failed" >&2; exit 3; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "confluent-kafka==$VERSION" >&2 || exit 1
fi
ready || exit 1
echo "$PY"
