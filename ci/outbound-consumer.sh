#!/usr/bin/env bash
# The outgoing webhooks against a real consumer: examples/outbound_consumer.py,
# which verifies each message with the Standard Webhooks Python library
# (standardwebhooks, from PyPI). A test event sent to the service must reach
# it, verified, as job.created, with no note text and no MRN.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/receiver.sh
. ci/receiver.sh

STANDARDWEBHOOKS_VERSION=1.0.0
TOKEN=outbound-token-not-a-secret
SECRET=whsec_outbound_check_not_a_secret
OUTBOUND_SECRET=whsec_Y2ktb3V0Ym91bmQtY29uc3VtZXItc2VjcmV0LTAw

cargo build --locked --quiet --bin cobalt-receiver
binary=${CARGO_TARGET_DIR:-target}/debug/cobalt-receiver
work=$(mktemp -d)
consumer_pid=
cleanup() {
  stop_receiver
  [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "standardwebhooks==$STANDARDWEBHOOKS_VERSION"

OUTBOUND_SECRET=$OUTBOUND_SECRET "$work/venv/bin/python" examples/outbound_consumer.py 0 \
  >"$work/consumer.out" 2>"$work/consumer.err" &
consumer_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^listening on //p' "$work/consumer.out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/consumer.err" >&2; echo "the consumer did not start" >&2; exit 1; }

RECEIVER_ENV="COBALT_RECEIVER_OUTBOUND_URL=http://127.0.0.1:$port/hooks COBALT_RECEIVER_OUTBOUND_SECRET=$OUTBOUND_SECRET" \
  start_receiver "$binary"
COBALT_RECEIVER_WEBHOOK_SECRETS=$SECRET "$binary" send-test-event --url "http://$address/webhooks/cobalt" >/dev/null

for _ in $(seq 200); do
  grep -q '"type": "job.created"' "$work/consumer.out" && break
  sleep 0.1
done
if ! grep -q '"type": "job.created"' "$work/consumer.out"; then
  cat "$work/consumer.out" "$work/consumer.err" "$work/server.log" >&2
  echo "the consumer did not take a verified job.created" >&2
  exit 1
fi
line=$(grep '"type": "job.created"' "$work/consumer.out")
python3 - "$line" <<'PY'
import json, sys
message = json.loads(sys.argv[1])
job = message["job"]
assert job["status"] == "created", job
assert message["webhook_id"].startswith("msg_"), message
assert "patient_mrn" not in job, "an endpoint without phi gets no MRN"
assert "note" not in json.dumps(job).lower().replace("patient_note_id", "").replace("emr_note_id", ""), job
print("outbound consumer: verified", message["type"], "for job", job["job_id"])
PY
