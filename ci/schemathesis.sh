#!/usr/bin/env bash
# OpenAPI conformance: schemathesis (from PyPI) against a running receiver.
# Every documented operation is called with generated requests; the run
# fails on any 5xx, any status, header or body the document does not
# declare, and any schema-valid request refused (or invalid one accepted).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
TOKEN=schemathesis-token-not-a-secret

cargo build --locked --quiet --bin cobalt-receiver
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"

COBALT_RECEIVER_LISTEN=127.0.0.1:0 \
COBALT_RECEIVER_DATABASE_URL="sqlite://$work/receiver.db" \
COBALT_RECEIVER_WEBHOOK_SECRETS=whsec_schemathesis_not_a_secret \
COBALT_RECEIVER_API_TOKENS=$TOKEN \
RUST_LOG=warn,cobalt_receiver::startup=info \
  target/debug/cobalt-receiver >"$work/server.log" 2>&1 &
server_pid=$!
address=
for _ in $(seq 100); do
  address=$(grep -o 'listening address=[0-9.:]*' "$work/server.log" | cut -d= -f2 || true)
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { cat "$work/server.log"; echo "the server did not start" >&2; exit 1; }

"$work/venv/bin/schemathesis" --config-file ci/schemathesis.toml run \
  "http://$address/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --max-examples 50 \
  --no-color
