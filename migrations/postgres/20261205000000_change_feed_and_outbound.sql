-- Every change of a job's state: the change feed, and what the outgoing
-- webhooks are made from. A writer inserts a change with `seq` (taken
-- after its job's row lock, so a job's changes take seqs in the order they
-- commit) and no position. The relay (any replica, one at a time: the row
-- lock on change_positions) then gives the committed changes it can see
-- their positions, in seq order, so positions follow commit order and a
-- reader's `position > cursor` never skips a change that commits later.
create table changes (
    seq             bigint generated always as identity primary key,
    position        bigint unique,
    job_id          text collate "C" not null,
    patient_note_id text collate "C" not null,
    kind            text not null
        check (kind in ('registered', 'created', 'failed', 'overdue')),
    at_ns           bigint not null  -- when the service learned of it, unix ns
);
create index changes_to_position on changes (seq) where position is null;

create table change_positions (
    id            integer primary key check (id = 1),
    last_position bigint  not null
);
insert into change_positions (id, last_position) values (1, 0);

-- Changes at or before `purged_through` were deleted after
-- change_retention_days: a cursor from before it has missed some.
create table change_purge (
    id             integer primary key check (id = 1),
    purged_through bigint  not null
);
insert into change_purge (id, purged_through) values (1, 0);

-- A pending job's passing of overdue_after is a change of its own, noted once.
alter table expected_jobs add column overdue_noted boolean not null default false;
create index expected_jobs_to_note_overdue
    on expected_jobs (submitted_ns) where not resolved and not overdue_noted;

-- Each configured endpoint of the outgoing webhooks: the feed position its
-- messages are made through, and which replica sends them (a lease).
create table outbound_endpoints (
    name            text collate "C" primary key,
    made_through    bigint not null,
    holder          text,
    lease_until_ns  bigint not null default 0,
    last_delivered_ns bigint,          -- the last message it took
    failing_since_ns  bigint           -- its first failed attempt since then
);

-- One message a change an endpoint takes; `id` is its `webhook-id`, the
-- same on every attempt.
create table outbound_messages (
    id              text collate "C" primary key,
    endpoint        text collate "C" not null,
    position        bigint not null,
    job_id          text collate "C" not null,
    patient_note_id text collate "C" not null,
    kind            text   not null,
    change_at_ns    bigint not null,
    state           text   not null check (state in ('queued', 'delivered', 'failed')),
    attempts        bigint not null default 0,
    next_attempt_ns bigint not null,
    last_attempt_ns bigint,
    last_status     bigint,           -- HTTP status of the last answer
    last_error      text,             -- a short excerpt of it, or why none came
    settled_ns      bigint            -- when it was delivered or failed
);

-- Due messages; the queued in order, by job, and the failed; a message per
-- change and endpoint; the settled by age, for the purge.
create index outbound_due
    on outbound_messages (endpoint, next_attempt_ns) where state = 'queued';
create index outbound_queued
    on outbound_messages (endpoint, position) where state = 'queued';
create index outbound_queued_by_job
    on outbound_messages (endpoint, job_id, position) where state = 'queued';
create index outbound_failed
    on outbound_messages (endpoint, position) where state = 'failed';
create unique index outbound_by_endpoint on outbound_messages (endpoint, position);
create index outbound_settled on outbound_messages (settled_ns) where state <> 'queued';
