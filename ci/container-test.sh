#!/usr/bin/env bash
# The real Dockerfile, built and run with podman (no Docker engine runs
# here): lint and build through ../shared/tools/container-check.sh, then
# start the image read-only as non-root with a webhook secret from a file
# (*_FILE) and an API token from the environment, send a signed event from
# the host, read its state back, run the image's health check, stop it with
# SIGTERM (exit 0 within 10 s), start it again on the same volume and read
# the state again, and report the image size (at most 42 MB: 41 MB since
# the OpenTelemetry exporter, HTTP and gRPC, added 2.4 MB to the binary).
set -euo pipefail
cd "$(dirname "$0")/.."

tool=../shared/tools/container-check.sh
if [ ! -f "$tool" ]; then
  echo "container test skipped: $tool is not here"
  exit 0
fi
export IMAGE=localhost/cobalt-receiver:ci
export STATE_DIR=${STATE_DIR:-/var/tmp/container-ci}
bash "$tool" lint
bash "$tool" seed
bash "$tool" build
# The same podman settings the tool uses.
export CONTAINERS_STORAGE_CONF="$STATE_DIR/storage-${STORAGE_DRIVER:-overlay}.conf"
export CONTAINERS_CONF="$STATE_DIR/containers.conf"

size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "image size: $size bytes ($((size / 1000000)) MB)"
[ "$size" -le 42000000 ] || { echo "the image is over 42 MB" >&2; exit 1; }

secret=whsec_container_test_not_a_secret
token=container-test-token-not-a-secret
port=${CONTAINER_TEST_PORT:-18090}
name=cobalt-receiver-ci-$$
volume=cobalt-receiver-ci-$$
work=$(mktemp -d)
cleanup() {
  podman rm -f -t 2 "$name" >/dev/null 2>&1 || true
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/secrets"
printf '%s\n' "$secret" > "$work/secrets/webhook_secrets"
chmod 755 "$work" "$work/secrets"
chmod 644 "$work/secrets/webhook_secrets"
podman volume create "$volume" >/dev/null

start() {
  podman run -d --name "$name" --pull=never --read-only \
    -p "127.0.0.1:$port:8080" \
    -v "$volume:/data" \
    -v "$work/secrets:/run/secrets:ro" \
    -e COBALT_RECEIVER_WEBHOOK_SECRETS_FILE=/run/secrets/webhook_secrets \
    -e COBALT_RECEIVER_API_TOKENS="$token" \
    "$IMAGE" >/dev/null
  for _ in $(seq 150); do
    curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  podman logs "$name" >&2 || true
  echo "the container did not become ready" >&2
  exit 1
}

start
pid=$(podman inspect -f '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
echo "runs as uid $uid, root filesystem read-only"
[ "$uid" != 0 ] || { echo "the container runs as root" >&2; exit 1; }

body='{"id":"evt_container_1","object":"event","created":"2025-10-09T10:30:00Z","type":"patient_note.created","job_id":"9001","data":{"patient_note_id":"pn_container","emr_note_id":"emr-container-1"}}'
signature=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" | awk '{ print $NF }')
answer=$(curl -fsS -X POST "http://127.0.0.1:$port/webhooks/cobalt" -H "cobalt-verification: $signature" -d "$body")
echo "delivery: $answer"
grep -q '"status":"applied"' <<<"$answer"
state=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/jobs/9001")
grep -q '"emr_note_id":"emr-container-1"' <<<"$state"

podman healthcheck run "$name"
echo "health check: healthy"

started=$SECONDS
podman stop -t 10 "$name" >/dev/null
took=$((SECONDS - started))
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
echo "SIGTERM: exit $code after ${took}s"
[ "$code" = 0 ] && [ "$took" -lt 10 ] || { podman logs "$name" >&2; exit 1; }
podman rm "$name" >/dev/null

start
state=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/jobs/9001")
grep -q '"emr_note_id":"emr-container-1"' <<<"$state"
echo "after a restart on the same volume: the job is still there"
echo "container test passed"
