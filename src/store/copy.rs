//! Moving up from SQLite: copies a SQLite database's history into
//! PostgreSQL, so a user who outgrows one machine keeps it: events with
//! their payloads, job states, expected jobs, idempotency keys, repeated
//! deliveries and the audit trail, and the cursor key while PostgreSQL has
//! served nothing yet, and the change feed (positions and all) with the
//! outgoing webhooks' messages while PostgreSQL's feed is empty. Sealed payloads and MRNs are copied sealed, as
//! they are (their associated data names event and job ids, which do not
//! change), with the registry of the key ids they are sealed under.
//!
//! Safe to re-run, and to run against a database that already serves
//! deliveries: each kind of row is recognized when already there (see
//! each writer) and skipped, and a job's state is replaced only by a
//! higher-ranked one, the same rule the writers follow. Events keep their
//! arrival order.
//!
//! Not copied, being the state of one database rather than history: the
//! payload purge's position (by the target's own seqs), the recovery
//! sweep's lease, console sessions (signing in again is cheap, and a copy
//! signs no one in), recovery runs started from the console (their
//! outcome is in the audit trail and the recovered events) and the
//! readiness probe's row.

use std::path::Path;

use anyhow::{Context, anyhow};
use rusqlite::OpenFlags;
use sqlx::Connection;

use super::{postgres, sqlite};

/// Rows read and written per transaction.
const CHUNK: i64 = 2_000;

/// Rows of one kind: how many SQLite has, and how many of them were
/// written; the rest were already there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub read: u64,
    pub copied: u64,
}

impl Tally {
    pub fn skipped(&self) -> u64 {
        self.read - self.copied
    }

    fn add(&mut self, read: usize, copied: u64) {
        self.read += read as u64;
        self.copied += copied;
    }
}

/// What became of the pagination cursors' key.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum CursorKey {
    /// PostgreSQL had served nothing: it took SQLite's, so cursors and
    /// idempotency keys issued on SQLite stay valid.
    Taken,
    /// PostgreSQL already had SQLite's.
    #[default]
    Same,
    /// PostgreSQL had served with its own: replacing it would void the
    /// cursors and idempotency keys it issued, so it kept it.
    KeptOwn,
}

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub events: Tally,
    /// Of the events whose payload SQLite still keeps.
    pub payloads: Tally,
    /// Copied: added, or replaced by a higher-ranked state.
    pub jobs: Tally,
    /// Copied: added, or marked resolved as in SQLite.
    pub expected_jobs: Tally,
    /// Idempotency keys. Copied: added, or settled as in SQLite.
    pub submissions: Tally,
    pub repeated_deliveries: Tally,
    pub audit_log: Tally,
    pub cursor_key: CursorKey,
    /// Key ids values are sealed under. Copied: added.
    pub sealing_keys: Tally,
    /// The change feed, positions and all, and the outgoing webhooks'
    /// messages: copied only into a database whose feed is empty.
    pub changes: Tally,
    pub outbound_messages: Tally,
    pub feed: FeedCopy,
}

/// What became of the change feed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FeedCopy {
    /// PostgreSQL's feed was empty: it took SQLite's, positions and all, so
    /// a consumer's cursor stays good.
    #[default]
    Taken,
    /// PostgreSQL had a feed of its own: positions cannot be shared, so it
    /// kept its own; consumers of SQLite's feed start again without a cursor.
    KeptOwn,
}

impl Copied {
    /// Each kind of row with its tally, in the order copied.
    pub fn kinds(&self) -> [(&'static str, Tally); 11] {
        let key = Tally {
            read: 1,
            copied: u64::from(self.cursor_key == CursorKey::Taken),
        };
        [
            ("cursor_key", key),
            ("sealing_keys", self.sealing_keys),
            ("events", self.events),
            ("payloads", self.payloads),
            ("jobs", self.jobs),
            ("expected_jobs", self.expected_jobs),
            ("submissions", self.submissions),
            ("repeated_deliveries", self.repeated_deliveries),
            ("audit_log", self.audit_log),
            ("changes", self.changes),
            ("outbound_messages", self.outbound_messages),
        ]
    }
}

/// Maps a PostgreSQL error to one naming what was being written.
fn writing(what: &'static str) -> impl Fn(sqlx::Error) -> anyhow::Error {
    move |e| anyhow!("writing {what} to PostgreSQL: {}", postgres::cause(&e))
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
    let mut copied = Copied::default();

    // First, while the target may still be empty: a run cut short leaves
    // rows behind, and the next run must take the key all the same.
    let key: Vec<u8> = source
        .read(|db| {
            db.query_row("select key from cursor_key where id = 1", [], |row| {
                row.get(0)
            })
        })
        .await
        .context("reading the cursor key from SQLite")?;
    copied.cursor_key = write_cursor_key(&mut target, &key)
        .await
        .map_err(writing("the cursor key"))?;

    // Before any sealed value: the target then never holds a value under
    // a key id its registry lacks.
    let sealing_keys: Vec<(String, i64)> = source
        .read(|db| {
            db.prepare("select key_id, announced_ns from sealing_keys order by key_id")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .await
        .context("reading the sealing key ids from SQLite")?;
    let added = write_sealing_keys(&mut target, &sealing_keys)
        .await
        .map_err(writing("the sealing key ids"))?;
    copied.sealing_keys.add(sealing_keys.len(), added);

    let total: u64 = source
        .read(|db| db.query_row("select count(*) from events", [], |row| row.get(0)))
        .await?;
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
            .map_err(writing("events"))?;
        copied.events.add(events.len(), added);
        let kept = events
            .iter()
            .filter(|e| !e.payload.is_empty() || e.sealed_payload.is_some())
            .count();
        copied.payloads.add(kept, payloads);
        progress(copied.events.read, total);
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
        let changed = write_jobs(&mut target, &jobs)
            .await
            .map_err(writing("jobs"))?;
        copied.jobs.add(jobs.len(), changed);
    }

    let mut after = String::new();
    loop {
        let from_key = after.clone();
        let expected = source
            .read(move |db| read_expected_jobs(db, &from_key))
            .await
            .context("reading expected jobs from SQLite")?;
        let Some(last) = expected.last() else { break };
        after = last.job_id.clone();
        let changed = write_expected_jobs(&mut target, &expected)
            .await
            .map_err(writing("expected jobs"))?;
        copied.expected_jobs.add(expected.len(), changed);
    }

    let mut after = String::new();
    loop {
        let from_key = after.clone();
        let keys = source
            .read(move |db| read_submissions(db, &from_key))
            .await
            .context("reading idempotency keys from SQLite")?;
        let Some(last) = keys.last() else { break };
        after = last.idempotency_key.clone();
        let changed = write_submissions(&mut target, &keys)
            .await
            .map_err(writing("idempotency keys"))?;
        copied.submissions.add(keys.len(), changed);
    }

    let mut after = 0;
    loop {
        let repeats = source
            .read(move |db| read_repeats(db, after))
            .await
            .context("reading repeated deliveries from SQLite")?;
        let Some(last) = repeats.last() else { break };
        after = last.rowid;
        let added = write_repeats(&mut target, &repeats)
            .await
            .map_err(writing("repeated deliveries"))?;
        copied.repeated_deliveries.add(repeats.len(), added);
    }

    let last_id: i64 = source
        .read(|db| {
            db.query_row("select coalesce(max(id), 0) from audit_log", [], |row| {
                row.get(0)
            })
        })
        .await?;
    reserve_audit_ids(&mut target, last_id)
        .await
        .map_err(writing("the audit trail"))?;
    let mut after = 0;
    loop {
        let rows = source
            .read(move |db| read_audit(db, after))
            .await
            .context("reading the audit trail from SQLite")?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let added = write_audit(&mut target, &rows)
            .await
            .map_err(writing("the audit trail"))?;
        copied.audit_log.add(rows.len(), added);
    }
    copy_feed(&source, &mut target, &mut copied).await?;
    target.close().await.ok();
    Ok(copied)
}

/// Copies the change feed and the outgoing messages in one transaction,
/// if PostgreSQL has never positioned a change: the positions then stay
/// those SQLite gave, and the relay is held (the counter's row lock) until
/// they are in, so PostgreSQL's own changes follow them.
async fn copy_feed(
    source: &Source,
    target: &mut sqlx::PgConnection,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    let (changes, messages): (u64, u64) = source
        .read(|db| {
            db.query_row(
                "select (select count(*) from changes), (select count(*) from outbound_messages)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })
        .await
        .context("reading the change feed from SQLite")?;
    let mut tx = target.begin().await.map_err(writing("the change feed"))?;
    let last: i64 =
        sqlx::query_scalar("select last_position from change_positions where id = 1 for update")
            .fetch_one(&mut *tx)
            .await
            .map_err(writing("the change feed"))?;
    if last > 0 {
        copied.feed = FeedCopy::KeptOwn;
        copied.changes = Tally {
            read: changes,
            copied: 0,
        };
        copied.outbound_messages = Tally {
            read: messages,
            copied: 0,
        };
        return Ok(());
    }
    let mut after = 0;
    loop {
        let rows: Vec<(i64, String, String, String, i64)> = source
            .read(move |db| {
                db.prepare_cached(
                    "select position, job_id, patient_note_id, kind, at_ns from changes
                     where position > ? order by position limit ?",
                )?
                .query_map(rusqlite::params![after, CHUNK], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?
                .collect()
            })
            .await
            .context("reading the change feed from SQLite")?;
        let Some(last) = rows.last() else { break };
        after = last.0;
        let added = sqlx::query(
            "insert into changes (position, job_id, patient_note_id, kind, at_ns)
             select * from unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[])
             on conflict (position) do nothing",
        )
        .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.4).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(writing("the change feed"))?
        .rows_affected();
        copied.changes.add(rows.len(), added);
    }
    let (last_position, purged_through): (i64, i64) = source
        .read(|db| {
            db.query_row(
                "select coalesce((select max(position) from changes), 0),
                        (select purged_through from change_purge where id = 1)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })
        .await?;
    sqlx::query("update change_positions set last_position = $1 where id = 1")
        .bind(last_position)
        .execute(&mut *tx)
        .await
        .map_err(writing("the change feed"))?;
    sqlx::query("update change_purge set purged_through = $1 where id = 1")
        .bind(purged_through)
        .execute(&mut *tx)
        .await
        .map_err(writing("the change feed"))?;
    let endpoints: Vec<(String, i64, Option<i64>, Option<i64>)> = source
        .read(|db| {
            db.prepare(
                "select name, made_through, last_delivered_ns, failing_since_ns
                 from outbound_endpoints order by name",
            )?
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect()
        })
        .await?;
    for (name, made_through, last_delivered_ns, failing_since_ns) in &endpoints {
        sqlx::query(
            "insert into outbound_endpoints (name, made_through, last_delivered_ns, failing_since_ns)
             values ($1, $2, $3, $4) on conflict (name) do nothing",
        )
        .bind(name)
        .bind(made_through)
        .bind(last_delivered_ns)
        .bind(failing_since_ns)
        .execute(&mut *tx)
        .await
        .map_err(writing("the outgoing webhooks' endpoints"))?;
    }
    let mut after = String::new();
    loop {
        let from = after.clone();
        let rows = source
            .read(move |db| {
                db.prepare_cached(&format!(
                    "select {} from outbound_messages where id > ? order by id limit ?",
                    super::outbound::MESSAGE_COLUMNS
                ))?
                .query_map(rusqlite::params![from, CHUNK], |row| {
                    super::outbound::message(row)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .context("reading the outgoing messages from SQLite")?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let added = sqlx::query(
            "insert into outbound_messages (id, endpoint, position, job_id, patient_note_id, kind,
                 change_at_ns, state, attempts, next_attempt_ns, last_attempt_ns, last_status,
                 last_error, settled_ns)
             select * from unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                 $6::text[], $7::int8[], $8::text[], $9::int8[], $10::int8[], $11::int8[],
                 $12::int8[], $13::text[], $14::int8[])
             on conflict do nothing",
        )
        .bind(rows.iter().map(|m| m.id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.endpoint.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.job_id.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|m| m.patient_note_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.change_at_ns).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.state.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|m| i64::from(m.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|m| m.next_attempt_ns).collect::<Vec<_>>())
        .bind(rows.iter().map(|m| m.last_attempt_ns).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|m| m.last_status.map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|m| m.last_error.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|m| m.settled_ns).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(writing("the outgoing messages"))?
        .rows_affected();
        copied.outbound_messages.add(rows.len(), added);
    }
    tx.commit().await.map_err(writing("the change feed"))?;
    copied.feed = FeedCopy::Taken;
    Ok(())
}

/// Gives the target SQLite's cursor key if it has served nothing yet (no
/// event, job, expected job or idempotency key: no cursor or request MAC
/// can have been made under its own), in one statement so a replica's
/// first write cannot slip in between.
async fn write_cursor_key(
    target: &mut sqlx::PgConnection,
    key: &[u8],
) -> Result<CursorKey, sqlx::Error> {
    let taken = sqlx::query(
        "update cursor_key set key = $1
         where id = 1 and key <> $1
           and not exists (select 1 from events)
           and not exists (select 1 from jobs)
           and not exists (select 1 from expected_jobs)
           and not exists (select 1 from submissions)",
    )
    .bind(key)
    .execute(&mut *target)
    .await?
    .rows_affected()
        == 1;
    if taken {
        return Ok(CursorKey::Taken);
    }
    let same: bool = sqlx::query_scalar("select key = $1 from cursor_key where id = 1")
        .bind(key)
        .fetch_one(&mut *target)
        .await?;
    Ok(if same {
        CursorKey::Same
    } else {
        CursorKey::KeptOwn
    })
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
    source: String,
    /// Empty once purged.
    payload: String,
    /// Its sealed form, when sealed (`payload` is then empty).
    sealed_payload: Option<Vec<u8>>,
    /// The key id it is sealed under, if it is.
    payload_key: Option<String>,
}

fn read_events(db: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<Event>> {
    db.prepare_cached(
        "select seq, event_id, event_type, job_id, patient_note_id, created, received_at,
                attempt, outcome, reject_reason, source, payload, payload_key, sealed_payload
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
            source: row.get(10)?,
            payload: row.get(11)?,
            payload_key: row.get(12)?,
            sealed_payload: row.get(13)?,
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
                                 $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[],
                                 $11::text[], $12::text[], $13::bytea[])
                with ordinality
                as t(event_id, event_type, job_id, patient_note_id, created,
                     received_at, attempt, outcome, reject_reason, source, payload,
                     payload_key, sealed, arrival)
        ),
        new_events as (
            insert into events (event_id, event_type, job_id, patient_note_id, created,
                                received_at, attempt, outcome, reject_reason, source)
            select event_id, event_type, job_id, patient_note_id, created,
                   received_at, attempt, outcome, reject_reason, source
            from input
            order by arrival
            on conflict (event_id) do nothing
            returning seq, event_id
        ),
        kept as (
            insert into payloads (seq, payload, payload_key, sealed)
            select new_events.seq, input.payload, input.payload_key, input.sealed
            from new_events join input on input.event_id = new_events.event_id
            where input.payload <> '' or input.sealed is not null
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
    .bind(events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.payload.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.payload_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        events
            .iter()
            .map(|e| e.sealed_payload.as_deref())
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
    /// The key id `patient_mrn` is sealed under, if it is.
    patient_mrn_key: Option<String>,
}

fn read_jobs(db: &rusqlite::Connection, after: &(String, String)) -> rusqlite::Result<Vec<Job>> {
    db.prepare_cached(
        "select patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                deciding_event_created, deciding_event_created_ns,
                first_received_at, last_received_at, patient_mrn_key
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
            patient_mrn_key: row.get(14)?,
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
                             $11::text[], $12::int8[], $13::text[], $14::text[], $15::text[])
            as t(patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                 patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                 deciding_event_created, deciding_event_created_ns,
                 first_received_at, last_received_at, patient_mrn_key)
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
    .bind(
        jobs.iter()
            .map(|j| j.patient_mrn_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *target)
    .await?;
    Ok(changed.rows_affected())
}

/// Adds the key ids not there yet. Returns how many it added.
async fn write_sealing_keys(
    target: &mut sqlx::PgConnection,
    keys: &[(String, i64)],
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(
        "insert into sealing_keys (key_id, announced_ns)
         select * from unnest($1::text[], $2::int8[])
         on conflict (key_id) do nothing",
    )
    .bind(keys.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, at)| *at).collect::<Vec<_>>())
    .execute(&mut *target)
    .await?
    .rows_affected();
    Ok(added)
}

struct ExpectedJob {
    job_id: String,
    patient_note_id: String,
    submitted_at: String,
    submitted_ns: i64,
    access_token_reference_id: Option<String>,
    registered_by: String,
    resolved: bool,
    overdue_noted: bool,
}

fn read_expected_jobs(
    db: &rusqlite::Connection,
    after: &str,
) -> rusqlite::Result<Vec<ExpectedJob>> {
    db.prepare_cached(
        "select job_id, patient_note_id, submitted_at, submitted_ns,
                access_token_reference_id, registered_by, resolved, overdue_noted
         from expected_jobs where job_id > ? order by job_id limit ?",
    )?
    .query_map(rusqlite::params![after, CHUNK], |row| {
        Ok(ExpectedJob {
            job_id: row.get(0)?,
            patient_note_id: row.get(1)?,
            submitted_at: row.get(2)?,
            submitted_ns: row.get(3)?,
            access_token_reference_id: row.get(4)?,
            registered_by: row.get(5)?,
            resolved: row.get::<_, i64>(6)? != 0,
            overdue_noted: row.get::<_, i64>(7)? != 0,
        })
    })?
    .collect()
}

/// Inserts the registrations not there yet. One already there keeps its
/// note and time (the first registration wins, as on either engine); it
/// only becomes resolved if SQLite's is, since an outcome never goes
/// away. Returns how many were added or resolved.
async fn write_expected_jobs(
    target: &mut sqlx::PgConnection,
    jobs: &[ExpectedJob],
) -> Result<u64, sqlx::Error> {
    let changed = sqlx::query(
        r#"
        insert into expected_jobs (job_id, patient_note_id, submitted_at, submitted_ns,
                                   access_token_reference_id, registered_by, resolved,
                                   overdue_noted)
        select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                             $6::text[], $7::bool[], $8::bool[])
            as t(job_id, patient_note_id, submitted_at, submitted_ns,
                 access_token_reference_id, registered_by, resolved, overdue_noted)
        order by job_id collate "C"
        on conflict (job_id) do update
        set resolved = expected_jobs.resolved or excluded.resolved,
            overdue_noted = expected_jobs.overdue_noted or excluded.overdue_noted
        where (excluded.resolved and not expected_jobs.resolved)
           or (excluded.overdue_noted and not expected_jobs.overdue_noted)
        "#,
    )
    .bind(jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>())
    .bind(
        jobs.iter()
            .map(|j| j.patient_note_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.submitted_at.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(jobs.iter().map(|j| j.submitted_ns).collect::<Vec<_>>())
    .bind(
        jobs.iter()
            .map(|j| j.access_token_reference_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        jobs.iter()
            .map(|j| j.registered_by.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(jobs.iter().map(|j| j.resolved).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.overdue_noted).collect::<Vec<_>>())
    .execute(&mut *target)
    .await?;
    Ok(changed.rows_affected())
}

struct Submission {
    idempotency_key: String,
    request_mac: String,
    state: String,
    job_id: Option<String>,
    created_ns: i64,
}

fn read_submissions(db: &rusqlite::Connection, after: &str) -> rusqlite::Result<Vec<Submission>> {
    db.prepare_cached(
        "select idempotency_key, request_mac, state, job_id, created_ns
         from submissions where idempotency_key > ? order by idempotency_key limit ?",
    )?
    .query_map(rusqlite::params![after, CHUNK], |row| {
        Ok(Submission {
            idempotency_key: row.get(0)?,
            request_mac: row.get(1)?,
            state: row.get(2)?,
            job_id: row.get(3)?,
            created_ns: row.get(4)?,
        })
    })?
    .collect()
}

/// Inserts the idempotency keys not there yet. A key already there is
/// kept, unless it is the same claim still in flight and SQLite has since
/// settled it. Returns how many were added or settled.
async fn write_submissions(
    target: &mut sqlx::PgConnection,
    keys: &[Submission],
) -> Result<u64, sqlx::Error> {
    let changed = sqlx::query(
        r#"
        insert into submissions (idempotency_key, request_mac, state, job_id, created_ns)
        select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
            as t(idempotency_key, request_mac, state, job_id, created_ns)
        order by idempotency_key collate "C"
        on conflict (idempotency_key) do update
            set state = excluded.state, job_id = excluded.job_id
        where submissions.state = 'in_flight' and excluded.state <> 'in_flight'
          and submissions.request_mac = excluded.request_mac
          and submissions.created_ns = excluded.created_ns
        "#,
    )
    .bind(
        keys.iter()
            .map(|k| k.idempotency_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        keys.iter()
            .map(|k| k.request_mac.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(keys.iter().map(|k| k.state.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.job_id.as_deref()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.created_ns).collect::<Vec<_>>())
    .execute(&mut *target)
    .await?;
    Ok(changed.rows_affected())
}

struct Repeat {
    rowid: i64,
    event_id: String,
    received_at: String,
    attempt: Option<i64>,
    /// 1 for the first row with these values, 2 for the next, ...
    nth: i64,
}

fn read_repeats(db: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<Repeat>> {
    db.prepare_cached(
        "select rowid, event_id, received_at, attempt,
                (select count(*) from repeated_deliveries b
                 where b.event_id = a.event_id and b.received_at = a.received_at
                   and b.attempt is a.attempt and b.rowid <= a.rowid)
         from repeated_deliveries a where rowid > ? order by rowid limit ?",
    )?
    .query_map([after, CHUNK], |row| {
        Ok(Repeat {
            rowid: row.get(0)?,
            event_id: row.get(1)?,
            received_at: row.get(2)?,
            attempt: row.get(3)?,
            nth: row.get(4)?,
        })
    })?
    .collect()
}

/// Inserts the repeated deliveries not there yet. They have no key: a row
/// is there when the target has as many rows with its values as SQLite
/// has up to it (the `nth`), so a re-run adds none and two identical
/// repeats are both kept. A repeat PostgreSQL recorded itself has its own
/// time, so it is never taken for a copied one. Returns how many were
/// added.
async fn write_repeats(
    target: &mut sqlx::PgConnection,
    repeats: &[Repeat],
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(
        r#"
        insert into repeated_deliveries (event_id, received_at, attempt)
        select event_id, received_at, attempt
        from unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
            with ordinality as i(event_id, received_at, attempt, nth, arrival)
        where (select count(*) from repeated_deliveries r
               where r.event_id = i.event_id and r.received_at = i.received_at
                 and r.attempt is not distinct from i.attempt) < i.nth
        order by arrival
        "#,
    )
    .bind(
        repeats
            .iter()
            .map(|r| r.event_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        repeats
            .iter()
            .map(|r| r.received_at.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(repeats.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .bind(repeats.iter().map(|r| r.nth).collect::<Vec<_>>())
    .execute(&mut *target)
    .await?;
    Ok(added.rows_affected())
}

struct AuditRow {
    id: i64,
    at: String,
    at_ns: i64,
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    /// 1 for the first row with these values, 2 for the next, ...
    nth: i64,
}

fn read_audit(db: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<AuditRow>> {
    db.prepare_cached(
        "select id, at, at_ns, actor, action, target, request_id,
                (select count(*) from audit_log b
                 where b.at_ns = a.at_ns and b.at = a.at and b.actor = a.actor
                   and b.action = a.action and b.target = a.target
                   and b.request_id is a.request_id and b.id <= a.id)
         from audit_log a where id > ? order by id limit ?",
    )?
    .query_map([after, CHUNK], |row| {
        Ok(AuditRow {
            id: row.get(0)?,
            at: row.get(1)?,
            at_ns: row.get(2)?,
            actor: row.get(3)?,
            action: row.get(4)?,
            target: row.get(5)?,
            request_id: row.get(6)?,
            nth: row.get(7)?,
        })
    })?
    .collect()
}

/// Moves the target's audit id sequence past SQLite's last id (and its
/// own), so that from now on the ids it gives out are above every id the
/// copy may keep: a copied row keeps its SQLite id while that id is free.
/// The lock waits for the inserts in progress, whose ids were drawn
/// before the move.
async fn reserve_audit_ids(
    target: &mut sqlx::PgConnection,
    last_id: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = target.begin().await?;
    sqlx::query("lock table audit_log in exclusive mode")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "select setval(s, greatest($1, (select coalesce(max(id), 0) from audit_log),
                                   coalesce(pg_sequence_last_value(s), 0)))
         from (select pg_get_serial_sequence('audit_log', 'id')::regclass as s) as q
         where greatest($1, (select coalesce(max(id), 0) from audit_log)) > 0",
    )
    .bind(last_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Inserts the audit rows not there yet, in the order recorded. Audit
/// rows have no natural key, and the target may have recorded rows of its
/// own under the same ids, so a row is recognized by its values, as
/// repeated deliveries are (see [`write_repeats`]), never by its id. A
/// row keeps its SQLite id unless the target has used it; then it takes
/// a new one, above SQLite's (see [`reserve_audit_ids`]). Returns how many
/// were added.
async fn write_audit(
    target: &mut sqlx::PgConnection,
    rows: &[AuditRow],
) -> Result<u64, sqlx::Error> {
    let added = sqlx::query(
        r#"
        insert into audit_log (id, at, at_ns, actor, action, target, request_id)
        overriding system value
        select case when exists (select 1 from audit_log a where a.id = i.id)
                    then nextval(pg_get_serial_sequence('audit_log', 'id'))
                    else i.id end,
               at, at_ns, actor, action, target, request_id
        from unnest($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::int8[])
            as i(id, at, at_ns, actor, action, target, request_id, nth)
        where (select count(*) from audit_log a
               where a.at_ns = i.at_ns and a.at = i.at and a.actor = i.actor
                 and a.action = i.action and a.target = i.target
                 and a.request_id is not distinct from i.request_id) < i.nth
        order by i.id
        "#,
    )
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.at.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.at_ns).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.actor.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.target.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.request_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.nth).collect::<Vec<_>>())
    .execute(&mut *target)
    .await?;
    Ok(added.rows_affected())
}
