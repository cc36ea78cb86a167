"""A clinic app's receiver of cobalt-receiver's outgoing webhooks.

Verifies each message with the Standard Webhooks library (pip install
standardwebhooks), takes each webhook-id once, and prints what it took as
one JSON line. CI runs it against the service (ci/outbound-consumer.sh).

    OUTBOUND_SECRET=whsec_... python3 examples/outbound_consumer.py [PORT]

It prints `listening on PORT` first (PORT 0: one the system picks).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["OUTBOUND_SECRET"])  # the endpoint's whsec_... secret
handled = set()  # a real app keeps this in its database
lock = Lock()


def receive(body: bytes, headers: dict) -> int:
    try:
        message = webhook.verify(body, headers)  # the signature, and a timestamp within 5 minutes
    except WebhookVerificationError:
        return 400
    with lock:
        if headers["webhook-id"] in handled:  # the same id on every retry
            return 200
        handle(headers["webhook-id"], message["type"], message["data"])
        handled.add(headers["webhook-id"])
    return 200


def handle(webhook_id: str, kind: str, job: dict) -> None:
    # Here the app tells the clinician: in the chart, or why not.
    print(json.dumps({"webhook_id": webhook_id, "type": kind, "job": job}), flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.send_response(receive(body, headers))
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
