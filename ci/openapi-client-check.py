"""Uses the client generated from /openapi.json (ci/openapi-client.sh)
against a live receiver, one route family at a time. Every client raises on
a status the document does not declare, and every answer is parsed into its
declared model: a 403 or 404 must come back as a parsed ErrorBody, a
timestamp as a datetime, a status as its enum."""

import datetime
import hashlib
import hmac
import os
import uuid

import httpx

from cobalt_receiver_client import AuthenticatedClient, Client
from cobalt_receiver_client.api.audit import list_audit
from cobalt_receiver_client.api.jobs import recover, register, submit
from cobalt_receiver_client.api.operation import health, metrics, ready
from cobalt_receiver_client.api.status import (
    get_job,
    get_patient_note,
    list_changes,
    list_job_events,
    list_patient_notes,
)
from cobalt_receiver_client.api.webhooks import receive_webhook
from cobalt_receiver_client.models import (
    AuditPage,
    ChangeKind,
    Changes,
    ErrorBody,
    HealthStatus,
    HealthWord,
    JobEvents,
    JobState,
    JobStatusName,
    NoteRequest,
    Outcome,
    Page,
    PatientNote,
    Receipt,
    ReceiptStatus,
    Reason,
    RecoveryRequest,
    RegisterJob,
    Source,
    StatusFilter,
    WebhookEvent,
    WebhookEventData,
)

URL = os.environ["RECEIVER_URL"]
SECRET = os.environ["WEBHOOK_SECRET"].encode()
RUN = uuid.uuid4().hex[:12]


def sign(request: httpx.Request) -> None:
    """Signs a delivery as Cobalt does: lowercase hex HMAC-SHA256 of the
    body as sent, keyed with the webhook secret (src/signature.rs)."""
    body = request.read()
    request.headers["cobalt-verification"] = hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def bearer(variable: str) -> AuthenticatedClient:
    return AuthenticatedClient(
        base_url=URL, token=os.environ[variable], raise_on_unexpected_status=True
    )


cobalt = Client(
    base_url=URL,
    raise_on_unexpected_status=True,
    httpx_args={"event_hooks": {"request": [sign]}},
)
client = bearer("CLIENT_TOKEN")
submitter = bearer("SUBMIT_TOKEN")
operator = bearer("OPERATE_TOKEN")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"openapi client check failed: {what}")


def deliver(event_type: str, job_id: str, data: dict, created: datetime.datetime) -> Receipt:
    event = WebhookEvent(
        id=f"evt_{RUN}_{job_id}_{event_type}",
        type_=event_type,
        created=created,
        job_id=job_id,
        object_="event",
        data=WebhookEventData.from_dict(data),
    )
    response = receive_webhook.sync_detailed(client=cobalt, body=event)
    check(response.status_code == 200, f"delivery of {event.id}: {response.status_code} {response.content!r}")
    check(isinstance(response.parsed, Receipt), f"delivery of {event.id}: {response.parsed!r}")
    return response.parsed


now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

# Health, without a token.
alive = health.sync(client=Client(base_url=URL, raise_on_unexpected_status=True))
check(isinstance(alive, HealthStatus) and alive.status == HealthWord.OK, f"healthz: {alive!r}")
readiness = ready.sync(client=Client(base_url=URL, raise_on_unexpected_status=True))
check(isinstance(readiness, HealthStatus) and readiness.status == HealthWord.READY, f"readyz: {readiness!r}")

# A registered job, then its failure delivered (signed) with reasons.
failed_job, failed_note = f"{RUN}1", f"note_{RUN}_failed"
registered = register.sync_detailed(
    failed_job,
    client=client,
    body=RegisterJob(patient_note_id=failed_note, submitted_at=now - datetime.timedelta(minutes=1)),
)
check(registered.status_code == 201, f"registration: {registered.status_code}")
check(
    isinstance(registered.parsed, JobState) and registered.parsed.status == JobStatusName.PENDING,
    f"registration: {registered.parsed!r}",
)
receipt = deliver(
    "patient_note.failed",
    failed_job,
    {
        "patient_note_id": failed_note,
        "failure_reason": "Failed to create patient note",
        "reasons": [{"code": "invalid_patient_mrn", "description": "No such patient", "hint": "kept"}],
    },
    now,
)
check(receipt.status == ReceiptStatus.APPLIED, f"receipt: {receipt!r}")
check(deliver("patient_note.failed", failed_job, {
    "patient_note_id": failed_note,
    "failure_reason": "Failed to create patient note",
}, now).status == ReceiptStatus.DUPLICATE, "a second delivery of one event id is a duplicate")

# Job read: an enum status, typed reasons, datetimes.
job = get_job.sync(failed_job, client=client)
check(isinstance(job, JobState), f"job read: {job!r}")
check(job.status == JobStatusName.FAILED, f"job status: {job.status!r}")
check(isinstance(job.first_received_at, datetime.datetime), f"first_received_at: {job.first_received_at!r}")
check(isinstance(job.submitted_at, datetime.datetime), f"submitted_at: {job.submitted_at!r}")
check(job.deciding_event_created == now, f"deciding_event_created: {job.deciding_event_created!r}")
check(isinstance(job.reasons, list) and isinstance(job.reasons[0], Reason), f"reasons: {job.reasons!r}")
check(job.reasons[0].code == "invalid_patient_mrn", f"reasons[0]: {job.reasons[0]!r}")
check(job.reasons[0]["hint"] == "kept", f"reasons[0] keeps other fields: {job.reasons[0]!r}")

# Job events.
events = list_job_events.sync(failed_job, client=client)
check(isinstance(events, JobEvents) and len(events.events) == 1, f"job events: {events!r}")
event = events.events[0]
check(event.outcome == Outcome.APPLIED and event.source == Source.WEBHOOK, f"event: {event!r}")
check(isinstance(event.received_at, datetime.datetime), f"received_at: {event.received_at!r}")

# Note read.
note = get_patient_note.sync(failed_note, client=client)
check(isinstance(note, PatientNote) and note.jobs[0].job_id == failed_job, f"note read: {note!r}")

# Listing with pagination: three created notes, two to a page.
created_jobs = set()
for n in range(3):
    job_id = f"{RUN}2{n}"
    deliver(
        "patient_note.created",
        job_id,
        {
            "patient_note_id": f"note_{RUN}_created_{n}",
            "emr_note_id": f"emr_{n}",
            "patient_mrn": "MRN-0001",
            "location_id": "loc_1",
        },
        now + datetime.timedelta(seconds=n),
    )
    created_jobs.add(job_id)
seen, cursor, pages = set(), None, 0
while True:
    kwargs = {"status": StatusFilter.CREATED, "limit": 2, "since": now}
    if cursor is not None:
        kwargs["cursor"] = cursor
    page = list_patient_notes.sync(client=client, **kwargs)
    check(isinstance(page, Page), f"listing: {page!r}")
    pages += 1
    seen.update(item.job_id for item in page.items)
    check(all(item.status == JobStatusName.CREATED for item in page.items), "listing by status")
    if not isinstance(page.next_cursor, str):
        break
    cursor = page.next_cursor
check(pages == 2 and seen == created_jobs, f"pagination: {pages} pages, {seen}")

# The change feed: the registration and the outcomes above, in order, then
# nothing after the last cursor.
feed = list_changes.sync(client=client, limit=1000)
check(isinstance(feed, Changes) and isinstance(feed.next_cursor, str), f"changes: {feed!r}")
ours = [change for change in feed.changes if change.job.job_id.startswith(RUN)]
check([c.kind for c in ours][:2] == [ChangeKind.REGISTERED, ChangeKind.FAILED], f"changes: {ours!r}")
check(all(isinstance(c.at, datetime.datetime) for c in ours), "changes' `at` are datetimes")
check(ours[1].job.status == JobStatusName.FAILED, f"a change's job: {ours[1].job!r}")
after = list_changes.sync(client=client, after=feed.next_cursor)
check(isinstance(after, Changes) and after.changes == [], f"changes after the last: {after!r}")
gone = list_changes.sync_detailed(client=client, after="99999999")
check(gone.status_code == 400 and isinstance(gone.parsed, ErrorBody), f"a cursor ahead of the feed: {gone!r}")

# A 404, parsed.
missing = get_job.sync_detailed(f"{RUN}404", client=client)
check(missing.status_code == 404 and isinstance(missing.parsed, ErrorBody), f"404: {missing!r}")
check(missing.parsed.code == "not_found", f"404 code: {missing.parsed!r}")

# A submit-only token on each read route: a parsed 403, not an exception.
for name, call in [
    ("job read", lambda: get_job.sync_detailed(failed_job, client=submitter)),
    ("job events", lambda: list_job_events.sync_detailed(failed_job, client=submitter)),
    ("note read", lambda: get_patient_note.sync_detailed(failed_note, client=submitter)),
    ("listing", lambda: list_patient_notes.sync_detailed(client=submitter)),
    ("changes", lambda: list_changes.sync_detailed(client=submitter)),
    ("audit", lambda: list_audit.sync_detailed(client=submitter)),
]:
    refused = call()
    check(refused.status_code == 403 and isinstance(refused.parsed, ErrorBody), f"403 on {name}: {refused!r}")
    check(refused.parsed.code == "forbidden", f"403 on {name}: {refused.parsed!r}")

# The audit trail, with the operate token: the reads above are in it.
audit = list_audit.sync(client=operator, actor="client", limit=1000)
check(isinstance(audit, AuditPage) and audit.items, f"audit: {audit!r}")
check(all(isinstance(row.at, datetime.datetime) for row in audit.items), "audit rows' `at` are datetimes")
check({"api.job.read", "api.job_events.read", "api.note.read", "api.list.read", "api.changes.read"}
      <= {row.action for row in audit.items},
      f"audit actions: {sorted({row.action for row in audit.items})}")

# Submission and recovery: no Cobalt credentials here, so each answers a
# parsed 503 `not_configured` (the tests cover both against a fake Cobalt).
submitted = submit.sync_detailed(
    client=client,
    body=NoteRequest(note="n", subject="s", patient_mrn="MRN-0001", location_id="loc_1"),
    idempotency_key=f"key-{RUN}",
)
check(submitted.status_code == 503 and isinstance(submitted.parsed, ErrorBody), f"submission: {submitted!r}")
check(submitted.parsed.code == "not_configured", f"submission: {submitted.parsed!r}")
recovery = recover.sync_detailed(client=operator, body=RecoveryRequest(since=now.date()))
check(recovery.status_code == 503 and isinstance(recovery.parsed, ErrorBody), f"recovery: {recovery!r}")
# (No body is sent as `null`: the generated client cannot leave it out.)
refused = recover.sync_detailed(client=client, body=None)
check(refused.status_code == 403 and isinstance(refused.parsed, ErrorBody), f"recovery without operate: {refused!r}")

# Metrics, as text.
scraped = metrics.sync(client=client)
check(isinstance(scraped, str) and "cobalt_receiver" in scraped, "metrics")

print("openapi client check: every route family answered as its schema says")
