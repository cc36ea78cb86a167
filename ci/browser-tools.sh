#!/usr/bin/env bash
# What the console's browser test needs: Debian's Chromium, a venv with
# Playwright (driving that Chromium; it never downloads a browser of its
# own) and axe-core from npm, for the accessibility checks. Installs only
# what is missing or at another version, so a second run costs nothing.
#
# Everything but Chromium goes under target/browser-tools/:
#   venv/bin/python                           (COBALT_TEST_BROWSER_PYTHON)
#   node_modules/axe-core/axe.min.js          (COBALT_TEST_AXE)
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=1.65.2
AXE_CORE_VERSION=4.14.1
CHROMIUM=/usr/bin/chromium
tools=target/browser-tools

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "ci/browser-tools.sh: $CHROMIUM is missing and installing it needs root" >&2
    exit 1
  fi
  echo "ci/browser-tools.sh: installing Chromium from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >/dev/null
  "${sudo[@]}" apt-get install -y -q chromium >/dev/null
fi

python=$tools/venv/bin/python
if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "ci/browser-tools.sh: installing Playwright $PLAYWRIGHT_VERSION" >&2
  python3 -m venv "$tools/venv"
  "$python" -m pip install --quiet --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION"
fi

axe=$tools/node_modules/axe-core
if ! [ -f "$axe/axe.min.js" ] || ! grep -q "\"version\": \"$AXE_CORE_VERSION\"" "$axe/package.json"; then
  echo "ci/browser-tools.sh: installing axe-core $AXE_CORE_VERSION" >&2
  npm install --prefix "$tools" --no-audit --no-fund --silent "axe-core@$AXE_CORE_VERSION"
fi

echo "ci/browser-tools.sh: $("$CHROMIUM" --version 2>/dev/null), Playwright $PLAYWRIGHT_VERSION, axe-core $AXE_CORE_VERSION" >&2
