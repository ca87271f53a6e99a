#!/bin/sh
# The deployment files through the field's tools (make deploy-check, after the project's own checks
# of them, DEPLOY_TESTS in the Makefile: references, settings such as the vault's share of calls
# per client against its workers; tools from install-check-tools.sh):
# - kubernetes-validate: deploy/k8s, as `kubectl kustomize` renders it, against the official
#   Kubernetes schemas, strictly (unknown fields are errors; KEDA's CRDs have no schema there:
#   tests/unit/test_k8s_manifests.py checks their references);
# - checkov: security policy of the rendered manifests and of the Dockerfile, and secrets in
#   the compose file, Dockerfile and deploy/ (checkov has no compose policy:
#   tests/unit/test_compose_file.py checks non-root, capabilities, read-only and mounts there);
# - promtool: the alerting rules, checked and unit-tested.
set -eu
TOOLS=${1:-.venv-deploy-tools}/bin
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
"$TOOLS/kubectl" kustomize deploy/k8s > "$rendered/tokenvault-k8s.yaml"
CHECKOV="$TOOLS/checkov --quiet --compact --skip-download"

echo "== kubernetes-validate --strict: deploy/k8s (rendered)"
"$TOOLS/kubernetes-validate" --strict --quiet "$rendered/tokenvault-k8s.yaml"
echo "== checkov: Kubernetes manifests (rendered)"
$CHECKOV --framework kubernetes -f "$rendered/tokenvault-k8s.yaml"
echo "== checkov: Dockerfile"
$CHECKOV --framework dockerfile -f Dockerfile
echo "== checkov: secrets in docker-compose.yml, Dockerfile, deploy/"
$CHECKOV --framework secrets -f docker-compose.yml -f Dockerfile -d deploy
echo "== promtool: alerting rules (every rule file in deploy/prometheus, and its .test.yml)"
for rules in deploy/prometheus/*.yml; do
  case "$rules" in *.test.yml) continue ;; esac
  "$TOOLS/promtool" check rules "$rules"
done
for tests in deploy/prometheus/*.test.yml; do
  (cd deploy/prometheus && "../../$TOOLS/promtool" test rules "$(basename "$tests")")
done
