#!/usr/bin/env bash
# OpenAPI conformance: schemathesis (from PyPI) against a running receiver.
# Every documented operation is called with generated requests; the run
# fails on any 5xx, any status, header or body the document does not
# declare, and any schema-valid request refused (or invalid one accepted).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

SCHEMATHESIS_VERSION=4.32.5
TOKEN=schemathesis-token-not-a-secret
SECRET=whsec_schemathesis_not_a_secret

cargo build --locked --quiet --bin cobalt-receiver
work=$(mktemp -d)
cleanup() {
  stop_receiver
  rm -rf "$work"
}
trap cleanup EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"

start_receiver "${CARGO_TARGET_DIR:-target}/debug/cobalt-receiver"

"$work/venv/bin/schemathesis" --config-file ci/schemathesis.toml run \
  "http://$address/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples 50 \
  --no-color
