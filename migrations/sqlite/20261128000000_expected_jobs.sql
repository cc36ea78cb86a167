-- How each event came: delivered by Cobalt (`webhook`) or fetched from
-- Cobalt's event list by the recovery sweep (`recovered`).
alter table events add column source text not null default 'webhook'
    check (source in ('webhook', 'recovered'));

-- Jobs the service expects an outcome for: registered by a client that
-- submitted the note itself, or submitted through this service. A job's
-- final state stays in `jobs`; this table only says that it was submitted,
-- when, and whether its outcome has arrived (`resolved`), so pending and
-- overdue jobs are found without reading every job.
create table expected_jobs (
    job_id                    text    primary key,
    patient_note_id           text    not null,
    submitted_at              text    not null,  -- RFC 3339, UTC
    submitted_ns              integer not null,  -- unix nanoseconds, for listing and overdue
    access_token_reference_id text,              -- the account it was submitted with, when known
    registered_by             text    not null,  -- name of the API token that registered it
    resolved                  integer not null default 0
) strict;

create index expected_jobs_pending
    on expected_jobs (submitted_ns, patient_note_id, job_id) where resolved = 0;

-- Idempotency keys of note submissions: a retry with the same key gets the
-- first answer instead of a second note in the chart. `request_mac` is an
-- HMAC of the request body under the cursor key (never the body itself).
create table submissions (
    idempotency_key text    primary key,
    request_mac     text    not null,
    state           text    not null check (state in ('in_flight', 'done', 'unknown')),
    job_id          text,
    created_ns      integer not null
) strict;

-- The recovery sweep's lease: one replica sweeps at a time, and the next
-- sweep is due when the lease expires.
create table reconcile_lease (
    id          integer primary key check (id = 1),
    holder      text,
    expires_ns  integer not null
) strict;
insert into reconcile_lease (id, holder, expires_ns) values (1, null, 0);
