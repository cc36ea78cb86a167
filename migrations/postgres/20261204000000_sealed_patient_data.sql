-- Patient data sealed at rest (see the SQLite migration): the key id beside
-- each sealed value, null where it is kept unsealed, and the registry of
-- the key ids values may be sealed under.
alter table payloads add column sealed bytea;
alter table payloads add column payload_key text;
alter table jobs add column patient_mrn_key text;

create table sealing_keys (
    key_id       text   collate "C" primary key,
    announced_ns bigint not null
);
