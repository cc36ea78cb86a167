#!/usr/bin/env bash
# A client generated from the OpenAPI document, and used: openapi-python-client
# (from PyPI) generates a Python package from a running receiver's
# /openapi.json (any generator warning fails the run), the package is
# installed, and ci/openapi-client-check.py calls each route family with it
# against that receiver. An undeclared status, or an answer that does not
# parse as its declared schema, fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

GENERATOR_VERSION=0.29.1
RUFF_VERSION=0.14.8
SECRET=whsec_openapi_client_not_a_secret
CLIENT_TOKEN=openapi-client-read-submit-not-a-secret
SUBMIT_TOKEN=openapi-client-submit-only-not-a-secret
OPERATE_TOKEN=openapi-client-operate-not-a-secret
TOKEN="client:read+submit:$CLIENT_TOKEN,submitter:submit:$SUBMIT_TOKEN,operator:operate:$OPERATE_TOKEN"

target=${CARGO_TARGET_DIR:-target}
cargo build --locked --quiet --bin cobalt-receiver
target=$(cd "$target" && pwd)
work=$(mktemp -d)
cleanup() {
  stop_receiver
  rm -rf "$work"
}
trap cleanup EXIT

# The generator and ruff (which it runs on what it writes) in a venv kept
# under the target directory; the generated package is installed into it.
venv=$target/openapi-client/venv
[ -x "$venv/bin/python" ] || { mkdir -p "$target/openapi-client" && python3 -m venv "$venv"; }
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "openapi-python-client==$GENERATOR_VERSION" "ruff==$RUFF_VERSION"

start_receiver "$target/debug/cobalt-receiver"

# `--fail-on-warning`: a schema the generator cannot model fails the run.
(cd "$work" && PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
  --url "http://$address/openapi.json" --output-path client --fail-on-warning) 2>&1 | tee "$work/generate.log"
if grep -qi 'warning' "$work/generate.log"; then
  echo "openapi-python-client warned (above); the document must generate cleanly" >&2
  exit 1
fi
"$venv/bin/pip" uninstall --quiet --yes cobalt-receiver-client >/dev/null 2>&1 || true
"$venv/bin/pip" install --quiet --disable-pip-version-check "$work/client"

RECEIVER_URL="http://$address" WEBHOOK_SECRET=$SECRET CLIENT_TOKEN=$CLIENT_TOKEN \
  SUBMIT_TOKEN=$SUBMIT_TOKEN OPERATE_TOKEN=$OPERATE_TOKEN \
  "$venv/bin/python" ci/openapi-client-check.py
