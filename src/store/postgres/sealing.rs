//! The registry of sealing key ids and rotate-keys' pages (see
//! `store::sealing`), over the shared pool: rotate-keys runs beside the
//! replicas, each replacement a compare-and-set on what it read.

use sqlx::PgPool;

use crate::store::sealing::{KeptMrn, KeptPayload, Resealed};

pub(super) async fn sealing_keys(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("select key_id, announced_ns from sealing_keys order by key_id")
        .fetch_all(pool)
        .await
}

pub(super) async fn record_sealing_key(
    pool: &PgPool,
    key_id: &str,
    now_ns: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into sealing_keys (key_id, announced_ns) values ($1, $2)
         on conflict (key_id) do update
         set announced_ns = greatest(sealing_keys.announced_ns, excluded.announced_ns)",
    )
    .bind(key_id)
    .bind(now_ns)
    .execute(pool)
    .await?;
    Ok(())
}

/// The condition is evaluated on the latest row version: a process
/// recording the key while this runs keeps it in the registry.
pub(super) async fn retire_sealing_key(
    pool: &PgPool,
    key_id: &str,
    quiet_since_ns: i64,
) -> sqlx::Result<bool> {
    let removed = sqlx::query("delete from sealing_keys where key_id = $1 and announced_ns < $2")
        .bind(key_id)
        .bind(quiet_since_ns)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(removed == 1)
}

pub(super) async fn mrns_to_reseal(
    pool: &PgPool,
    sealing_id: &str,
    after: Option<&(String, String)>,
    limit: u32,
) -> sqlx::Result<Vec<KeptMrn>> {
    let (note, job) = after.map_or((None, None), |(note, job)| (Some(note), Some(job)));
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "select patient_note_id, job_id, patient_mrn, patient_mrn_key from jobs
         where ($1::text is null or (patient_note_id, job_id) > ($1, $2))
           and patient_mrn is not null and patient_mrn_key is distinct from $3
         order by patient_note_id, job_id limit $4",
    )
    .bind(note)
    .bind(job)
    .bind(sealing_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(patient_note_id, job_id, text, key_id)| KeptMrn {
            patient_note_id,
            job_id,
            text,
            key_id,
        })
        .collect())
}

pub(super) async fn reseal_mrns(pool: &PgPool, rows: &[Resealed<KeptMrn>]) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let mut replaced = 0;
    for row in rows {
        replaced += sqlx::query(
            "update jobs set patient_mrn = $1, patient_mrn_key = $2
             where patient_note_id = $3 and job_id = $4
               and patient_mrn = $5 and patient_mrn_key is not distinct from $6",
        )
        .bind(row.sealed.to_base64())
        .bind(&*row.sealed.key_id)
        .bind(&row.was.patient_note_id)
        .bind(&row.was.job_id)
        .bind(&row.was.text)
        .bind(&row.was.key_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(replaced)
}

pub(super) async fn payloads_to_reseal(
    pool: &PgPool,
    sealing_id: &str,
    after: Option<i64>,
    limit: u32,
) -> sqlx::Result<Vec<KeptPayload>> {
    type Row = (i64, String, String, Option<Vec<u8>>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "select payloads.seq, events.event_id, payload, sealed, payload_key
         from payloads join events on events.seq = payloads.seq
         where payloads.seq > $1 and payload_key is distinct from $2
         order by payloads.seq limit $3",
    )
    .bind(after.unwrap_or(0))
    .bind(sealing_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, event_id, text, sealed, key_id)| KeptPayload {
            seq,
            event_id,
            text,
            sealed,
            key_id,
        })
        .collect())
}

pub(super) async fn reseal_payloads(
    pool: &PgPool,
    rows: &[Resealed<KeptPayload>],
) -> sqlx::Result<u64> {
    let mut tx = pool.begin().await?;
    let mut replaced = 0;
    for row in rows {
        replaced += sqlx::query(
            "update payloads set payload = '', sealed = $1, payload_key = $2
             where seq = $3 and payload = $4 and sealed is not distinct from $5
               and payload_key is not distinct from $6",
        )
        .bind(&row.sealed.bytes)
        .bind(&*row.sealed.key_id)
        .bind(row.was.seq)
        .bind(&row.was.text)
        .bind(&row.was.sealed)
        .bind(&row.was.key_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(replaced)
}
