#!/usr/bin/env bash
# Checks the operations files with what this machine can run (part of
# `make test`; docs/operations.md says what cannot be run here):
#   - ops/prometheus.yml and ops/docker/prometheus.yml: promtool check config
#   - ops/alerts.yml: promtool check rules
#   - ops/grafana/*.json: valid JSON (the series they query are checked by
#     the node's tests)
#   - ops/docker/compose.yml: docker-compose config (the Compose schema)
#   - ops/k8s/*.yaml: kubernetes-validate --strict (the Kubernetes API
#     schemas, unknown fields refused)
#   - ops/systemd/replog-node.service: systemd-analyze verify, no warnings
# Missing tools are installed (apt-get, pip) where this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "== check-ops: $*"; }
need_root() {
  [ "$(id -u)" = 0 ] || { echo "check-ops: $1 is missing; installing it needs root" >&2; exit 1; }
}
apt_install() {
  need_root "$1"
  exec 9>/tmp/replog-apt.lock
  flock 9
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
  exec 9>&-
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "promtool"
bash ops/ensure-prometheus.sh
promtool check config ops/prometheus.yml
promtool check rules ops/alerts.yml
# The compose copy names the rules by their path inside the container.
sed "s|/etc/prometheus/alerts.yml|$PWD/ops/alerts.yml|" ops/docker/prometheus.yml >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"

step "Grafana dashboard and provisioning"
for f in ops/grafana/*.json; do python3 -m json.tool "$f" >/dev/null && echo "  $f: valid JSON"; done
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml
for f in ops/grafana/provisioning/*/*.yml; do
  python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d.get("apiVersion") == 1, "no apiVersion: 1"' "$f"
  echo "  $f: valid YAML"
done

step "docker-compose config"
command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
docker-compose -f ops/docker/compose.yml config -q && echo "  ops/docker/compose.yml: valid"

step "kubernetes-validate"
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  need_root kubernetes-validate
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate
fi
python3 -m kubernetes_validate --strict ops/k8s/services.yaml ops/k8s/statefulset.yaml ops/k8s/pdb.yaml
python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d["kind"] == "Kustomization"; [open("ops/k8s/" + r) for r in d["resources"]]' ops/k8s/kustomization.yaml
echo "  ops/k8s/kustomization.yaml: names existing files"

step "systemd-analyze verify"
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
# verify wants the binary to exist: point it at one that does.
sed "s|^ExecStart=/usr/local/bin/replog-node|ExecStart=/bin/true|" ops/systemd/replog-node.service >"$tmp/replog-node.service"
out=$(systemd-analyze verify "$tmp/replog-node.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "check-ops: systemd-analyze warns about ops/systemd/replog-node.service" >&2
  exit 1
fi
echo "  ops/systemd/replog-node.service: valid"

step "ok"
