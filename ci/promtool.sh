#!/usr/bin/env bash
# promtool, for the test that runs `promtool check metrics` on a fresh
# server's /metrics (tests/api/metrics.rs) and for the alert rules' checks
# and unit tests (ci/prometheus-rules.sh): from Debian's `prometheus`
# package, installed only when promtool is missing, so a second run costs
# nothing. Only promtool is used; the package's own Prometheus server is
# never started by the tests (without its recommends: no node exporter).
set -euo pipefail

if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "ci/promtool.sh: promtool is missing and installing it needs root" >&2
    exit 1
  fi
  echo "ci/promtool.sh: installing promtool from Debian's prometheus package" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi

echo "ci/promtool.sh: $(promtool --version 2>&1 | head -n 1)" >&2
