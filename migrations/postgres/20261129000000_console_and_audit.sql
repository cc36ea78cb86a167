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

create index jobs_by_emr_note on jobs (emr_note_id) where emr_note_id is not null;
create index jobs_failed_by_reason
    on jobs (failure_reason, deciding_event_created_ns, patient_note_id, job_id)
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
