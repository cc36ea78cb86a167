-- Every index is written by every delivery, inside the commit the delivery
-- waits for: fewer indexes, and indexes that grow only at their end, mean
-- fewer pages per commit.

-- Purging expired payloads walks the event log in arrival order from where
-- it last stopped, instead of keeping an index of unpurged payloads.
drop index events_unpurged_by_received;
create table payload_purge (
    id                 integer primary key check (id = 1),
    swept_through_seq  integer not null  -- events up to this seq are past retention and purged
) strict;
insert into payload_purge (id, swept_through_seq) values (1, 0);

-- Listings by status read one index per status, in ascending creation time
-- (read backwards for newest first). New jobs land at the end of their
-- index instead of splitting pages in its middle. A listing of every
-- status merges the two.
drop index jobs_newest;
drop index jobs_by_status_newest;
create index jobs_created_by_time
    on jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'created';
create index jobs_failed_by_time
    on jobs (deciding_event_created_ns, patient_note_id, job_id) where status = 'failed';
