-- Patient data sealed at rest under the operator's keys. Beside each
-- sealed value, the id of the key it is sealed under; null where the value
-- is kept unsealed (no key configured when it was written). A sealed
-- payload is kept as bytes (nonce, ciphertext, tag) in `sealed_payload`,
-- `payload` then empty; a sealed MRN as their base64 in `patient_mrn`.
alter table events add column sealed_payload blob;
alter table events add column payload_key text;
alter table jobs add column patient_mrn_key text;

-- The key ids values may be sealed under: every process records the key it
-- seals under before its first write, and again every 30 seconds
-- (`announced_ns`). rotate-keys removes an id once no value and no running
-- process uses it; a start whose keys lack a listed id is refused.
create table sealing_keys (
    key_id       text    primary key,
    announced_ns integer not null
) strict;
