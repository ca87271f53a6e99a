#!/usr/bin/env bash
# promtool check + unit tests of the shipped alerting rules. Installs promtool (Debian's
# `prometheus` package) when it is missing and we may (root with apt-get).
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
    else
        echo "promtool is missing: install Debian's 'prometheus' package (or Prometheus' release) and retry" >&2
        exit 1
    fi
fi
promtool check rules tokenvault-alerts.yml
promtool test rules tokenvault-alerts.test.yml
