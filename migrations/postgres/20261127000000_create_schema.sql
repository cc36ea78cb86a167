-- The PostgreSQL engine's schema: the same tables and meanings as the
-- SQLite engine's, shaped for several replicas writing at once.
--
-- Ids are `collate "C"`: they compare bytewise, as in SQLite, so ranking
-- ties and listing order are the same on both engines. Times are kept as
-- the same RFC 3339 text the SQLite engine keeps, so answers are identical.

-- Every delivery that passed the signature check and had an event id, kept
-- whatever became of it. event_id is the dedupe key: a second replica
-- inserting the same id waits for the first to commit, then finds it.
create table events (
    seq             bigint generated always as identity primary key,  -- arrival order
    event_id        text collate "C" not null unique,
    event_type      text,
    job_id          text collate "C",
    patient_note_id text collate "C",
    created         text,
    received_at     text collate "C" not null,  -- RFC 3339, UTC; compared as text
    attempt         bigint,
    outcome         text   not null
        check (outcome in ('applied', 'superseded', 'ignored', 'rejected')),
    reject_reason   text
);

create index events_by_job on events (job_id, seq);

-- The body of each event exactly as received (patient data), in a table of
-- its own so that emptying it after the retention period deletes narrow
-- rows instead of rewriting the event log.
create table payloads (
    seq     bigint primary key,  -- events.seq
    payload text   not null
);

-- How far the payload purge has swept the event log (by seq). Its one row
-- is locked by the replica purging, so replicas never purge side by side.
create table payload_purge (
    id                integer primary key check (id = 1),
    swept_through_seq bigint  not null
);
insert into payload_purge (id, swept_through_seq) values (1, 0);

-- The final state of each job, decided by its highest-ranked event:
-- created beats failed, then the later `created`, then the greater event id.
create table jobs (
    patient_note_id           text collate "C" not null,
    job_id                    text collate "C" not null,
    status                    text   not null check (status in ('created', 'failed')),
    emr_note_id               text,
    failure_reason            text,
    reasons                   text,
    patient_mrn               text,
    location_id               text,
    access_token_reference_id text,
    deciding_event_id         text collate "C" not null,
    deciding_event_created    text   not null,
    deciding_event_created_ns bigint not null,
    first_received_at         text   not null,
    last_received_at          text   not null,
    primary key (patient_note_id, job_id)
);

create index jobs_by_job_id on jobs (job_id);
create index jobs_created_by_time
    on jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'created';
create index jobs_failed_by_time
    on jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'failed';

-- The readiness check's durable write of a delivery's size.
create table writer_probe (
    id         integer primary key,
    written_at text    not null,
    padding    bytea
);

-- The key that authenticates pagination cursors, made once with the data,
-- so every replica issues and accepts the same cursors.
create table cursor_key (
    id  integer primary key check (id = 1),
    key bytea   not null check (length(key) = 32)
);
insert into cursor_key (id, key)
values (1, sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));
