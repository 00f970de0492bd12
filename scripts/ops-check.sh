#!/usr/bin/env bash
# Static checks of the operations files (run by scripts/test.sh; `make ops-check` alone):
#   - Prometheus rules: `promtool check rules` and the `promtool test rules` unit tests;
#     the scrape config: `promtool check config` (rule files resolved from the repo).
#   - Kubernetes manifests: strict schema validation (kubernetes-validate) and our own policy
#     (probes, resources, non-root, read-only root, no privilege escalation, no capabilities).
#   - docker-compose.yml: `docker compose config -q` when the compose plugin exists, and always
#     a structural check (services, dependencies, mounted files, Prometheus targets).
#   - Dockerfile: the properties we promise (multi-stage, non-root USER, HEALTHCHECK on /health).
# Installs missing tools itself (apt-get: prometheus for promtool; pip: kubernetes-validate, PyYAML).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.34.1

echo "== ops: tools"
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: installing the Debian package prometheus (one-off)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v kubernetes-validate >/dev/null 2>&1 \
  || [ "$(kubernetes-validate --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
  echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (one-off)"
  python3 -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q PyYAML
promtool --version 2>&1 | head -1
echo "kubernetes-validate $(kubernetes-validate --version)"

echo "== ops: prometheus rules"
promtool check rules monitoring/rules/*.yml
promtool test rules monitoring/tests/*.test.yml

echo "== ops: prometheus config"
# The config names the rule files by their path inside the container: check a copy that points
# at the repo's files instead.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The same for the scrape token's secret file (promtool wants it to exist).
echo "placeholder-token-for-promtool" >"$tmp/iiot_token"
sed -e "s#/etc/prometheus/rules/#$PWD/monitoring/rules/#" \
  -e "s#/run/secrets/iiot_token#$tmp/iiot_token#" monitoring/prometheus.yml >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"

echo "== ops: kubernetes manifests"
manifests=()
for f in k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
kubernetes-validate --strict "${manifests[@]}"
python3 scripts/ops/check_k8s.py k8s

echo "== ops: docker compose"
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q
else
  echo "(docker compose plugin not installed: structural check only)"
fi
python3 scripts/ops/check_compose.py docker-compose.yml

echo "== ops: Dockerfile"
python3 scripts/ops/check_dockerfile.py Dockerfile

echo "== ops: all checks passed"
