-- Every index is written by every delivery, inside the commit the delivery
-- waits for. Two of them can go.

-- Purging expired payloads walks the event log in arrival order from where
-- it last stopped, instead of keeping an index of unpurged payloads.
drop index events_unpurged_by_received;
create table payload_purge (
    id                 integer primary key check (id = 1),
    swept_through_seq  integer not null  -- events up to this seq are past retention and purged
) strict;
insert into payload_purge (id, swept_through_seq) values (1, 0);

-- Listing jobs of every status merges the two status ranges of
-- jobs_by_status_newest, which keeps them in the same order.
drop index jobs_newest;
