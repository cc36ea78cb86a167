-- Rows the readiness check writes through the writer, proving the database
-- takes a durable write of a delivery's size right now (not locked, not
-- full, writable). Row 1 keeps the time of the last successful probe; the
-- probe's 64 KiB row is inserted and deleted in the same transaction.
create table writer_probe (
    id         integer primary key,
    written_at text    not null,
    padding    blob
) strict;
