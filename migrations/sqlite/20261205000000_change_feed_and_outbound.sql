-- Every change of a job's state, in commit order: the change feed, and
-- what the outgoing webhooks are made from. One writer commits at a time,
-- so the position a row takes on insert (its row id) is its commit order.
-- The purge always keeps the newest change, so a position is never handed
-- out twice (cheaper than AUTOINCREMENT's write of sqlite_sequence on every
-- insert).
create table changes (
    position        integer primary key,
    job_id          text    not null,
    patient_note_id text    not null,
    kind            text    not null
        check (kind in ('registered', 'created', 'failed', 'overdue')),
    at_ns           integer not null  -- when the service learned of it, unix ns
) strict;

-- Changes at or before `purged_through` were deleted after
-- change_retention_days: a cursor from before it has missed some.
create table change_purge (
    id             integer primary key check (id = 1),
    purged_through integer not null
) strict;
insert into change_purge (id, purged_through) values (1, 0);

-- A pending job's passing of overdue_after is a change of its own, noted once.
alter table expected_jobs add column overdue_noted integer not null default 0;
create index expected_jobs_to_note_overdue
    on expected_jobs (submitted_ns) where resolved = 0 and overdue_noted = 0;

-- Each configured endpoint of the outgoing webhooks: the feed position its
-- messages are made through, and which process sends them (a lease).
create table outbound_endpoints (
    name            text    primary key,
    made_through    integer not null,
    holder          text,
    lease_until_ns  integer not null default 0,
    last_delivered_ns integer,         -- the last message it took
    failing_since_ns  integer          -- its first failed attempt since then
) strict;

-- One message a change an endpoint takes; `id` is its `webhook-id`, the
-- same on every attempt.
create table outbound_messages (
    id              text    primary key,
    endpoint        text    not null,
    position        integer not null,
    job_id          text    not null,
    patient_note_id text    not null,
    kind            text    not null,
    change_at_ns    integer not null,
    state           text    not null check (state in ('queued', 'delivered', 'failed')),
    attempts        integer not null default 0,
    next_attempt_ns integer not null,
    last_attempt_ns integer,
    last_status     integer,           -- HTTP status of the last answer
    last_error      text,              -- a short excerpt of it, or why none came
    settled_ns      integer            -- when it was delivered or failed
) strict;

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
