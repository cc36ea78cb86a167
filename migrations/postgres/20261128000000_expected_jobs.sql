-- How each event came: delivered by Cobalt (`webhook`) or fetched from
-- Cobalt's event list by the recovery sweep (`recovered`).
alter table events add column source text not null default 'webhook'
    check (source in ('webhook', 'recovered'));

-- Jobs the service expects an outcome for (see the SQLite migration).
-- `resolved` is set by the batch that applies the job's first outcome; a
-- registration committing beside that batch may miss it, so readers also
-- check `jobs`, and the recovery sweep settles such rows.
create table expected_jobs (
    job_id                    text collate "C" primary key,
    patient_note_id           text collate "C" not null,
    submitted_at              text    not null,
    submitted_ns              bigint  not null,
    access_token_reference_id text,
    registered_by             text    not null,
    resolved                  boolean not null default false
);

create index expected_jobs_pending
    on expected_jobs (submitted_ns, patient_note_id, job_id) where not resolved;

create table submissions (
    idempotency_key text   primary key,
    request_mac     text   not null,
    state           text   not null check (state in ('in_flight', 'done', 'unknown')),
    job_id          text,
    created_ns      bigint not null
);

create table reconcile_lease (
    id          integer primary key check (id = 1),
    holder      text,
    expires_ns  bigint  not null
);
insert into reconcile_lease (id, holder, expires_ns) values (1, null, 0);
