//! Moving up from SQLite: copies a SQLite database's events, payloads and
//! job states into PostgreSQL, so a user who outgrows one machine keeps
//! their history.
//!
//! Safe to re-run, and to run against a database that already serves
//! deliveries: an event id already there is skipped (with its payload),
//! and a job's state is replaced only by a higher-ranked one, the same
//! rule the writers follow. Events keep their arrival order.

use std::path::Path;

use anyhow::{Context, anyhow};
use rusqlite::OpenFlags;
use sqlx::Connection;

use super::{postgres, sqlite};

/// Rows read and written per transaction.
const CHUNK: i64 = 2_000;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub events_read: u64,
    /// Events that were not in PostgreSQL yet.
    pub events_added: u64,
    pub payloads_added: u64,
    pub jobs_read: u64,
    /// Jobs added, or replaced by a higher-ranked state.
    pub jobs_changed: u64,
}

/// Copies the SQLite file at `from` into the PostgreSQL database at
/// `to_url` (migrating both first), reporting `(events done, events in
/// all)` after each chunk.
pub async fn sqlite_to_postgres(
    from: &Path,
    to_url: &str,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Copied> {
    sqlite::migrate_existing(from).await?;
    let mut target = postgres::connect_migrated(to_url).await?;
    let source = Source::open(from)?;
    let total: u64 = source
        .read(|db| db.query_row("select count(*) from events", [], |row| row.get(0)))
        .await?;

    let mut copied = Copied::default();
    let mut after = 0;
    progress(0, total);
    loop {
        let events = source
            .read(move |db| read_events(db, after))
            .await
            .context("reading events from SQLite")?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        let (added, payloads) = write_events(&mut target, &events)
            .await
            .map_err(|e| anyhow!("writing events to PostgreSQL: {}", postgres::cause(&e)))?;
        copied.events_read += events.len() as u64;
        copied.events_added += added;
        copied.payloads_added += payloads;
        progress(copied.events_read, total);
    }

    let mut after = (String::new(), String::new());
    loop {
        let from_key = after.clone();
        let jobs = source
            .read(move |db| read_jobs(db, &from_key))
            .await
            .context("reading jobs from SQLite")?;
        let Some(last) = jobs.last() else { break };
        after = (last.patient_note_id.clone(), last.job_id.clone());
        copied.jobs_changed += write_jobs(&mut target, &jobs)
            .await
            .map_err(|e| anyhow!("writing jobs to PostgreSQL: {}", postgres::cause(&e)))?;
        copied.jobs_read += jobs.len() as u64;
    }
    target.close().await.ok();
    Ok(copied)
}

/// The SQLite file, read-only, on a blocking thread per read.
struct Source(std::sync::Arc<std::sync::Mutex<rusqlite::Connection>>);

impl Source {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let db = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(std::sync::Arc::new(std::sync::Mutex::new(db))))
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let db = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || query(&db.lock().expect("not poisoned"))).await??)
    }
}

struct Event {
    seq: i64,
    event_id: String,
    event_type: Option<String>,
    job_id: Option<String>,
    patient_note_id: Option<String>,
    created: Option<String>,
    received_at: String,
    attempt: Option<i64>,
    outcome: String,
    reject_reason: Option<String>,
    /// Empty once purged.
    payload: String,
}

fn read_events(db: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<Event>> {
    db.prepare_cached(
        "select seq, event_id, event_type, job_id, patient_note_id, created, received_at,
                attempt, outcome, reject_reason, payload
         from events where seq > ? order by seq limit ?",
    )?
    .query_map([after, CHUNK], |row| {
        Ok(Event {
            seq: row.get(0)?,
            event_id: row.get(1)?,
            event_type: row.get(2)?,
            job_id: row.get(3)?,
            patient_note_id: row.get(4)?,
            created: row.get(5)?,
            received_at: row.get(6)?,
            attempt: row.get(7)?,
            outcome: row.get(8)?,
            reject_reason: row.get(9)?,
            payload: row.get(10)?,
        })
    })?
    .collect()
}

/// Inserts the events not there yet, in the order given, with their
/// payloads (none for a purged one). Returns (events, payloads) added.
async fn write_events(
    target: &mut sqlx::PgConnection,
    events: &[Event],
) -> Result<(u64, u64), sqlx::Error> {
    let (added, payloads): (i64, i64) = sqlx::query_as(
        r#"
        with input as (
            select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[])
                with ordinality
                as t(event_id, event_type, job_id, patient_note_id, created,
                     received_at, attempt, outcome, reject_reason, payload, arrival)
        ),
        new_events as (
            insert into events (event_id, event_type, job_id, patient_note_id, created,
                                received_at, attempt, outcome, reject_reason)
            select event_id, event_type, job_id, patient_note_id, created,
                   received_at, attempt, outcome, reject_reason
            from input
            order by arrival
            on conflict (event_id) do nothing
            returning seq, event_id
        ),
        kept as (
            insert into payloads (seq, payload)
            select new_events.seq, input.payload
            from new_events join input on input.event_id = new_events.event_id
            where input.payload <> ''
            returning seq
        )
        select (select count(*) from new_events), (select count(*) from kept)
        "#,
    )
    .bind(
        events
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.event_type.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.job_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.patient_note_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.created.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.received_at.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| e.attempt).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.outcome.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.reject_reason.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.payload.as_str())
            .collect::<Vec<_>>(),
    )
    .fetch_one(&mut *target)
    .await?;
    Ok((added as u64, payloads as u64))
}

struct Job {
    patient_note_id: String,
    job_id: String,
    /// The other columns, in `JOB_COLUMNS` order after the key.
    status: String,
    emr_note_id: Option<String>,
    failure_reason: Option<String>,
    reasons: Option<String>,
    patient_mrn: Option<String>,
    location_id: Option<String>,
    access_token_reference_id: Option<String>,
    deciding_event_id: String,
    deciding_event_created: String,
    deciding_event_created_ns: i64,
    first_received_at: String,
    last_received_at: String,
}

fn read_jobs(db: &rusqlite::Connection, after: &(String, String)) -> rusqlite::Result<Vec<Job>> {
    db.prepare_cached(
        "select patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                deciding_event_created, deciding_event_created_ns,
                first_received_at, last_received_at
         from jobs where (patient_note_id, job_id) > (?, ?)
         order by patient_note_id, job_id limit ?",
    )?
    .query_map(rusqlite::params![after.0, after.1, CHUNK], |row| {
        Ok(Job {
            patient_note_id: row.get(0)?,
            job_id: row.get(1)?,
            status: row.get(2)?,
            emr_note_id: row.get(3)?,
            failure_reason: row.get(4)?,
            reasons: row.get(5)?,
            patient_mrn: row.get(6)?,
            location_id: row.get(7)?,
            access_token_reference_id: row.get(8)?,
            deciding_event_id: row.get(9)?,
            deciding_event_created: row.get(10)?,
            deciding_event_created_ns: row.get(11)?,
            first_received_at: row.get(12)?,
            last_received_at: row.get(13)?,
        })
    })?
    .collect()
}

/// Upserts job states under the ranking rule (a job already there keeps
/// its first-received time). Returns how many changed.
async fn write_jobs(target: &mut sqlx::PgConnection, jobs: &[Job]) -> Result<u64, sqlx::Error> {
    let changed = sqlx::query(concat!(
        super::sql::insert_job!(),
        r#"
        select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                             $11::text[], $12::int8[], $13::text[], $14::text[])
            as t(patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                 patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                 deciding_event_created, deciding_event_created_ns,
                 first_received_at, last_received_at)
        order by patient_note_id collate "C", job_id collate "C"
        "#,
        super::sql::replace_if_outranked!()
    ))
    .bind(
        jobs.iter()
            .map(|j| j.patient_note_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.status.as_str()).collect::<Vec<_>>())
    .bind(
        jobs.iter()
            .map(|j| j.emr_note_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.failure_reason.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.reasons.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.patient_mrn.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.location_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.access_token_reference_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.deciding_event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.deciding_event_created.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.deciding_event_created_ns)
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.first_received_at.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.last_received_at.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *target)
    .await?;
    Ok(changed.rows_affected())
}
