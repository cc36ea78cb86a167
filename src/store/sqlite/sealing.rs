//! The registry of sealing key ids and rotate-keys' pages (see
//! `store::sealing`). Pages are read on reader threads; replacements and
//! the registry are written on the writer thread, between batches.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::sealing::{KeptMrn, KeptPayload, Resealed};

pub(super) fn sealing_keys(db: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    db.prepare_cached("select key_id, announced_ns from sealing_keys order by key_id")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

pub(super) fn record_sealing_key(
    db: &mut Connection,
    key_id: &str,
    now_ns: i64,
) -> rusqlite::Result<()> {
    db.prepare_cached(
        "insert into sealing_keys (key_id, announced_ns) values (?1, ?2)
         on conflict (key_id) do update set announced_ns = max(announced_ns, excluded.announced_ns)",
    )?
    .execute(params![key_id, now_ns])?;
    Ok(())
}

pub(super) fn retire_sealing_key(
    db: &mut Connection,
    key_id: &str,
    quiet_since_ns: i64,
) -> rusqlite::Result<bool> {
    let removed = db
        .prepare_cached("delete from sealing_keys where key_id = ? and announced_ns < ?")?
        .execute(params![key_id, quiet_since_ns])?;
    Ok(removed == 1)
}

pub(super) fn mrns_to_reseal(
    db: &Connection,
    sealing_id: &str,
    after: Option<&(String, String)>,
    limit: u32,
) -> rusqlite::Result<Vec<KeptMrn>> {
    let (note, job) = after.map_or((None, None), |(note, job)| (Some(note), Some(job)));
    db.prepare_cached(
        "select patient_note_id, job_id, patient_mrn, patient_mrn_key from jobs
         where (?1 is null or (patient_note_id, job_id) > (?1, ?2))
           and patient_mrn is not null and patient_mrn_key is not ?3
         order by patient_note_id, job_id limit ?4",
    )?
    .query_map(params![note, job, sealing_id, limit], |row| {
        Ok(KeptMrn {
            patient_note_id: row.get(0)?,
            job_id: row.get(1)?,
            text: row.get(2)?,
            key_id: row.get(3)?,
        })
    })?
    .collect()
}

pub(super) fn reseal_mrns(
    db: &mut Connection,
    rows: &[Resealed<KeptMrn>],
) -> rusqlite::Result<u64> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut replaced = 0;
    {
        let mut update = tx.prepare_cached(
            "update jobs set patient_mrn = ?, patient_mrn_key = ?
             where patient_note_id = ? and job_id = ? and patient_mrn = ? and patient_mrn_key is ?",
        )?;
        for row in rows {
            replaced += update.execute(params![
                row.sealed.to_base64(),
                &*row.sealed.key_id,
                row.was.patient_note_id,
                row.was.job_id,
                row.was.text,
                row.was.key_id,
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(replaced)
}

pub(super) fn payloads_to_reseal(
    db: &Connection,
    sealing_id: &str,
    after: Option<i64>,
    limit: u32,
) -> rusqlite::Result<Vec<KeptPayload>> {
    db.prepare_cached(
        "select seq, event_id, payload, sealed_payload, payload_key from events
         where seq > ? and (payload <> '' or sealed_payload is not null)
           and payload_key is not ?
         order by seq limit ?",
    )?
    .query_map(params![after.unwrap_or(0), sealing_id, limit], |row| {
        Ok(KeptPayload {
            seq: row.get(0)?,
            event_id: row.get(1)?,
            text: row.get(2)?,
            sealed: row.get(3)?,
            key_id: row.get(4)?,
        })
    })?
    .collect()
}

pub(super) fn reseal_payloads(
    db: &mut Connection,
    rows: &[Resealed<KeptPayload>],
) -> rusqlite::Result<u64> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut replaced = 0;
    {
        let mut update = tx.prepare_cached(
            "update events set payload = '', sealed_payload = ?, payload_key = ?
             where seq = ? and payload = ? and sealed_payload is ? and payload_key is ?",
        )?;
        for row in rows {
            replaced += update.execute(params![
                row.sealed.bytes,
                &*row.sealed.key_id,
                row.was.seq,
                row.was.text,
                row.was.sealed,
                row.was.key_id,
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(replaced)
}
