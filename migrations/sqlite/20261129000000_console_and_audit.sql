-- The audit trail: who looked at what, who exported, who ran recovery.
-- Rows are only ever appended, and deleted after `audit_retention_days`.
-- `actor` is an API token's name, never the token; `target` is an id or a
-- filter, never patient data (an MRN reveal names the job, not the MRN).
create table audit_log (
    id          integer primary key,   -- order of recording
    at          text    not null,      -- RFC 3339, UTC
    at_ns       integer not null,      -- unix nanoseconds, for ranges and purging
    actor       text    not null,
    action      text    not null,
    target      text    not null,
    request_id  text
) strict;

create index audit_log_by_time on audit_log (at_ns);
-- The Audit page filters by who and by what.
create index audit_log_by_actor on audit_log (actor, id);
create index audit_log_by_action on audit_log (action, id);

-- The console finds a job by its EMR note id, and lists jobs by failure
-- reason, location and account, newest first, reading only what it shows
-- (without these, a filter matching few jobs reads all of them). Failures
-- by time carry their reason, so a day's failures are grouped by reason
-- from the index alone.
create index jobs_by_emr_note on jobs (emr_note_id) where emr_note_id is not null;
create index jobs_failed_by_reason
    on jobs (failure_reason, deciding_event_created_ns, patient_note_id, job_id)
    where status = 'failed';
create index jobs_by_location
    on jobs (location_id, status, deciding_event_created_ns, patient_note_id, job_id)
    where location_id is not null;
create index jobs_by_account
    on jobs (access_token_reference_id, status, deciding_event_created_ns, patient_note_id, job_id)
    where access_token_reference_id is not null;
drop index jobs_failed_by_time;
create index jobs_failed_by_time
    on jobs (deciding_event_created_ns, patient_note_id, job_id, failure_reason)
    where status = 'failed';

-- Deliveries of an event already recorded (Cobalt's retry of a delivery it
-- thought lost, a double send): the event is stored once, and each repeat
-- is noted here so a job's story shows it. Webhook deliveries only.
create table repeated_deliveries (
    event_id    text not null,
    received_at text not null,
    attempt     integer
) strict;

create index repeated_deliveries_by_event on repeated_deliveries (event_id);
