-- Finds the payloads (patient data) older than the retention period that
-- are still kept; a purged payload is ''.
create index events_unpurged_by_received on events (received_at) where payload <> '';
