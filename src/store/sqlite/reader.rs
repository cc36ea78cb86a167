//! Status queries, on reader threads with read-only connections.
//!
//! Each thread owns one connection with its prepared statements cached, and
//! takes queries from a shared channel; WAL lets them read while the writer
//! commits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, Row, params, params_from_iter};
use tokio::sync::oneshot;

use super::{connect, decode_error, outcome_column, source_column};
use crate::domain::JobStatus;
use crate::store::sql::{self, Columns, SQLITE, Value};
use crate::store::{
    DaySummary, EventSummary, ExpectedJob, FailureGroup, HOUR_NS, HourOutcomes, JobQuery, JobState,
    LastDelivery, PendingSummary, RepeatedDelivery, StoreError, StoreOptions, TimeToEmr,
};

/// A query for a reader thread; `None` stops the thread that takes it.
type Query = Option<Box<dyn FnOnce(&Connection) + Send>>;

#[derive(Clone)]
pub(super) struct Readers {
    queries: flume::Sender<Query>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Readers {
    pub(super) fn start(path: &Path, options: &StoreOptions) -> anyhow::Result<Self> {
        let (queries, incoming) = flume::bounded::<Query>(1024);
        let mut threads = Vec::new();
        for n in 0..options.read_pool_size.max(1) {
            let db = connect(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                options,
            )?;
            db.pragma_update(None, "query_only", true)?;
            let incoming = incoming.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("db-reader-{n}"))
                    .spawn(move || {
                        while let Ok(Some(query)) = incoming.recv() {
                            query(&db);
                        }
                    })?,
            );
        }
        Ok(Self {
            queries,
            threads: Arc::new(Mutex::new(threads)),
        })
    }

    /// Runs `query` on a reader thread.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Query = Some(Box::new(move |db| {
            let _ = reply.send(query(db));
        }));
        self.queries
            .send_async(job)
            .await
            .map_err(|_| StoreError::Stopped)?;
        Ok(answer.await.map_err(|_| StoreError::Stopped)??)
    }

    /// Stops every reader thread and waits for their connections to close.
    pub(super) async fn stop(&self) {
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().expect("not poisoned"));
        for _ in &threads {
            let _ = self.queries.send_async(None).await;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }

    fn int(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }

    fn invalid(message: String) -> rusqlite::Error {
        decode_error(message)
    }
}

/// The job's outcomes (normally one), or its pending state if it has none.
pub(super) fn jobs_by_job_id(
    db: &Connection,
    job_id: &str,
    overdue_before_ns: i64,
) -> rusqlite::Result<Vec<JobState>> {
    let read = |row: &Row<'_>| sql::job_state(row, overdue_before_ns);
    let decided: Vec<JobState> = db
        .prepare_cached(&format!(
            "{} where jobs.job_id = ?1 order by jobs.patient_note_id",
            SQLITE.decided_jobs()
        ))?
        .query_map([job_id], read)?
        .collect::<rusqlite::Result<_>>()?;
    if !decided.is_empty() {
        return Ok(decided);
    }
    db.prepare_cached(&format!(
        "{} and expected_jobs.job_id = ?1",
        SQLITE.pending_jobs()
    ))?
    .query_map([job_id], read)?
    .collect()
}

pub(super) fn jobs_by_note(
    db: &Connection,
    patient_note_id: &str,
) -> rusqlite::Result<Vec<JobState>> {
    db.prepare_cached(&format!(
        "{} where jobs.patient_note_id = ?1
         order by deciding_event_created_ns desc, jobs.job_id desc",
        SQLITE.decided_jobs()
    ))?
    .query_map([patient_note_id], |row| sql::job_state(row, i64::MIN))?
    .collect()
}

pub(super) fn list_jobs(
    db: &Connection,
    query: &JobQuery,
    overdue_before_ns: i64,
) -> rusqlite::Result<Vec<JobState>> {
    let listing = SQLITE.list_jobs(query, overdue_before_ns);
    db.prepare_cached(&listing.sql)?
        .query_map(params_from_iter(values(listing.values)), |row| {
            sql::job_state(row, overdue_before_ns)
        })?
        .collect()
}

/// A built statement's parameters, as rusqlite binds them.
pub(super) fn values(values: Vec<Value>) -> impl Iterator<Item = rusqlite::types::Value> {
    values.into_iter().map(|value| match value {
        Value::Int(int) => int.into(),
        Value::Text(text) => text.into(),
    })
}

pub(super) fn pending_summary(
    db: &Connection,
    overdue_before_ns: i64,
) -> rusqlite::Result<PendingSummary> {
    db.prepare_cached(
        "select count(*), coalesce(sum(submitted_ns < ?), 0), min(submitted_ns)
         from expected_jobs
         where resolved = 0
           and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
    )?
    .query_row([overdue_before_ns], |row| {
        Ok(PendingSummary {
            pending: row.get(0)?,
            overdue: row.get(1)?,
            oldest_submitted_ns: row.get(2)?,
        })
    })
}

pub(super) fn overdue_jobs(
    db: &Connection,
    before_ns: i64,
    limit: u32,
) -> rusqlite::Result<Vec<ExpectedJob>> {
    db.prepare_cached(
        "select job_id, access_token_reference_id from expected_jobs
         where resolved = 0 and submitted_ns < ?
           and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)
         order by submitted_ns, patient_note_id, job_id limit ?",
    )?
    .query_map(params![before_ns, limit], |row| {
        Ok(ExpectedJob {
            job_id: row.get(0)?,
            access_token_reference_id: row.get(1)?,
        })
    })?
    .collect()
}

pub(super) fn job_events(db: &Connection, job_id: &str) -> rusqlite::Result<Vec<EventSummary>> {
    db.prepare_cached(
        "select event_id, event_type, job_id, patient_note_id, created, received_at,
                attempt, outcome, reject_reason, source
         from events where job_id = ? order by seq",
    )?
    .query_map([job_id], |row| {
        Ok(EventSummary {
            event_id: row.get(0)?,
            event_type: row.get(1)?,
            job_id: row.get(2)?,
            patient_note_id: row.get(3)?,
            created: row.get(4)?,
            received_at: row.get(5)?,
            attempt: row.get(6)?,
            outcome: outcome_column(&row.get::<_, String>(7)?)?,
            reject_reason: row.get(8)?,
            source: source_column(&row.get::<_, String>(9)?)?,
        })
    })?
    .collect()
}

/// The newest migration applied successfully.
pub(super) fn latest_migration(db: &Connection) -> rusqlite::Result<Option<i64>> {
    db.prepare_cached("select max(version) from _sqlx_migrations where success = 1")?
        .query_row([], |row| row.get(0))
}

/// Counts each status on its own index (a `group by` would read the table).
pub(super) fn jobs_by_status(db: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    db.prepare_cached(
        "select 'created', count(*) from jobs where status = 'created'
         union all select 'failed', count(*) from jobs where status = 'failed'",
    )?
    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
    .collect()
}

/// Outcomes decided in `[from_ns, to_ns)`: counts, and failures by reason,
/// each over its status's index.
pub(super) fn day_summary(
    db: &Connection,
    from_ns: i64,
    to_ns: i64,
) -> rusqlite::Result<DaySummary> {
    let count = |status: &str| -> rusqlite::Result<i64> {
        db.prepare_cached(&format!(
            "select count(*) from jobs where status = '{status}'
             and deciding_event_created_ns >= ? and deciding_event_created_ns < ?"
        ))?
        .query_row(params![from_ns, to_ns], |row| row.get(0))
    };
    let created = count("created")?;
    let failed = count("failed")?;
    let failures = db
        .prepare_cached(
            "select failure_reason, count(*), min(deciding_event_created_ns),
                    max(deciding_event_created_ns)
             from jobs where status = 'failed'
               and deciding_event_created_ns >= ? and deciding_event_created_ns < ?
             group by failure_reason order by count(*) desc, failure_reason",
        )?
        .query_map(params![from_ns, to_ns], |row| {
            Ok(FailureGroup {
                reason: row.get(0)?,
                count: row.get(1)?,
                first_ns: row.get(2)?,
                last_ns: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DaySummary {
        created,
        failed,
        failures,
    })
}

/// Outcomes decided in `[from_ns, to_ns)` by the hour since `from_ns`,
/// each status counted over its own index.
pub(super) fn outcomes_by_hour(
    db: &Connection,
    from_ns: i64,
    to_ns: i64,
) -> rusqlite::Result<Vec<HourOutcomes>> {
    let mut hours: Vec<HourOutcomes> = Vec::new();
    for status in [JobStatus::Created, JobStatus::Failed] {
        let status_name = status.as_str();
        let counts = db
            .prepare_cached(&format!(
                "select (deciding_event_created_ns - ?1) / ?3, count(*)
                 from jobs where status = '{status_name}'
                   and deciding_event_created_ns >= ?1 and deciding_event_created_ns < ?2
                 group by 1"
            ))?
            .query_map(params![from_ns, to_ns, HOUR_NS], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        crate::store::add_hour_counts(&mut hours, status, counts);
    }
    Ok(hours)
}

/// Time to the EMR of up to `limit` registered jobs created in
/// `[from_ns, to_ns)`, read along the created jobs' time index.
pub(super) fn times_to_emr(
    db: &Connection,
    from_ns: i64,
    to_ns: i64,
    limit: u32,
) -> rusqlite::Result<Vec<TimeToEmr>> {
    db.prepare_cached(
        "select jobs.location_id, jobs.deciding_event_created_ns - expected_jobs.submitted_ns
         from jobs join expected_jobs on expected_jobs.job_id = jobs.job_id
         where jobs.status = 'created'
           and jobs.deciding_event_created_ns >= ?1 and jobs.deciding_event_created_ns < ?2
         order by jobs.deciding_event_created_ns limit ?3",
    )?
    .query_map(params![from_ns, to_ns, limit], |row| {
        Ok(TimeToEmr {
            location_id: row.get(0)?,
            nanos: row.get(1)?,
        })
    })?
    .collect()
}

/// The newest delivery Cobalt made (recovered events are not deliveries).
pub(super) fn last_delivery(db: &Connection) -> rusqlite::Result<Option<LastDelivery>> {
    db.prepare_cached(
        "select received_at, event_type from events where source = 'webhook'
         order by seq desc limit 1",
    )?
    .query_map([], |row| {
        Ok(LastDelivery {
            received_at: row.get(0)?,
            event_type: row.get(1)?,
        })
    })?
    .next()
    .transpose()
}

/// Job ids of the jobs whose note has this EMR note id.
pub(super) fn jobs_by_emr_note(
    db: &Connection,
    emr_note_id: &str,
) -> rusqlite::Result<Vec<String>> {
    db.prepare_cached("select job_id from jobs where emr_note_id = ? order by job_id limit 10")?
        .query_map([emr_note_id], |row| row.get(0))?
        .collect()
}

/// The job an event was about, if the event is recorded and named one.
pub(super) fn job_of_event(db: &Connection, event_id: &str) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("select job_id from events where event_id = ?")?
        .query_map([event_id], |row| row.get::<_, Option<String>>(0))?
        .next()
        .transpose()
        .map(Option::flatten)
}

pub(super) fn repeated_deliveries(
    db: &Connection,
    job_id: &str,
) -> rusqlite::Result<Vec<RepeatedDelivery>> {
    db.prepare_cached(
        "select r.event_id, r.received_at, r.attempt
         from events e join repeated_deliveries r on r.event_id = e.event_id
         where e.job_id = ? order by r.received_at",
    )?
    .query_map([job_id], |row| {
        Ok(RepeatedDelivery {
            event_id: row.get(0)?,
            received_at: row.get(1)?,
            attempt: row.get(2)?,
        })
    })?
    .collect()
}
