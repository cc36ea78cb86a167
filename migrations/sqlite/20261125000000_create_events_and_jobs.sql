-- Every delivery that passed the signature check and had an event id, kept
-- whatever became of it. Rows are never updated; event_id is the dedupe key.
create table events (
    seq             integer primary key,   -- arrival order
    event_id        text    not null unique,
    event_type      text,                  -- null when the body had no string `type`
    job_id          text,                  -- decimal string, when the body had one
    patient_note_id text,
    created         text,                  -- the event's `created`, as sent
    received_at     text    not null,      -- RFC 3339, UTC
    attempt         integer,               -- the webhook-attempt header, when numeric
    outcome         text    not null
        check (outcome in ('applied', 'superseded', 'ignored', 'rejected')),
    reject_reason   text,                  -- names the field; never a value
    payload         text    not null       -- the body exactly as received
) strict;

create index events_by_job on events (job_id, seq);

-- The final state of each job, decided by its highest-ranked event
-- (created beats failed, then the later `created`, then the greater event id).
create table jobs (
    patient_note_id           text    not null,
    job_id                    text    not null,
    status                    text    not null check (status in ('created', 'failed')),
    emr_note_id               text,    -- set when status = 'created'
    failure_reason            text,    -- set when status = 'failed'
    reasons                   text,    -- data.reasons as JSON, when the failed event had it
    patient_mrn               text,
    location_id               text,
    access_token_reference_id text,
    deciding_event_id         text    not null,
    deciding_event_created    text    not null,  -- as sent
    deciding_event_created_ns integer not null,  -- unix nanoseconds, for ranking and listing
    first_received_at         text    not null,
    last_received_at          text    not null,
    primary key (patient_note_id, job_id)
) strict;

create index jobs_by_job_id on jobs (job_id);
create index jobs_newest on jobs (deciding_event_created_ns desc, patient_note_id desc, job_id desc);
create index jobs_by_status_newest
    on jobs (status, deciding_event_created_ns desc, patient_note_id desc, job_id desc);
