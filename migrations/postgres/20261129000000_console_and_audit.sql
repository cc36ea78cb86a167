-- The audit trail (see the SQLite migration): appended, and deleted after
-- `audit_retention_days`; ids and filters, never patient data.
create table audit_log (
    id          bigint generated always as identity primary key,
    at          text   not null,
    at_ns       bigint not null,
    actor       text   not null,
    action      text   not null,
    target      text   not null,
    request_id  text
);

create index audit_log_by_time on audit_log (at_ns);
create index audit_log_by_actor on audit_log (actor, id);
create index audit_log_by_action on audit_log (action, id);

-- As in the SQLite migration: the console's lookups and filters, and a
-- day's failures grouped by reason from the index alone.
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
    on jobs (deciding_event_created_ns, patient_note_id, job_id) include (failure_reason)
    where status = 'failed';

-- Deliveries of an event already recorded (Cobalt's retry of a delivery it
-- thought lost, a double send): the event is stored once, and each repeat
-- is noted here so a job's story shows it. Webhook deliveries only.
create table repeated_deliveries (
    event_id    text collate "C" not null,
    received_at text not null,
    attempt     bigint
);

create index repeated_deliveries_by_event on repeated_deliveries (event_id);
