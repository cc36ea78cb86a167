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
use crate::store::{
    AuditQuery, AuditRow, DaySummary, EventSummary, ExpectedJob, FailureGroup, JobKey, JobQuery,
    JobState, LastDelivery, ListStatus, PendingSummary, RepeatedDelivery, StoreError, StoreOptions,
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

/// A job with an outcome, and when it was submitted if it was registered.
const JOB_COLUMNS: &str = "jobs.patient_note_id, jobs.job_id, status, emr_note_id,
    failure_reason, reasons, patient_mrn, location_id, jobs.access_token_reference_id,
    deciding_event_id, deciding_event_created, deciding_event_created_ns, first_received_at,
    last_received_at, expected_jobs.submitted_at
    from jobs left join expected_jobs on expected_jobs.job_id = jobs.job_id";

/// A pending job, in the columns of [`JOB_COLUMNS`]. Its outcome may have
/// landed since `resolved` was read; `jobs` says for sure.
const PENDING_COLUMNS: &str = "patient_note_id, job_id, 'pending', null, null, null, null, null,
    access_token_reference_id, null, null, submitted_ns, null, null, submitted_at
    from expected_jobs
    where resolved = 0 and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)";

/// Reads a row selected with [`JOB_COLUMNS`] or [`PENDING_COLUMNS`].
fn job_state(row: &Row<'_>) -> rusqlite::Result<JobState> {
    let patient_note_id: String = row.get(0)?;
    let job_id: String = row.get(1)?;
    let reasons = row
        .get::<_, Option<String>>(5)?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| decode_error(e.to_string()))?;
    Ok(JobState {
        key: JobKey {
            created_ns: row.get(11)?,
            patient_note_id: patient_note_id.clone(),
            job_id: job_id.clone(),
        },
        patient_note_id,
        job_id,
        status: row.get(2)?,
        overdue: false,
        submitted_at: row.get(14)?,
        emr_note_id: row.get(3)?,
        failure_reason: row.get(4)?,
        reasons,
        patient_mrn: row.get(6)?,
        location_id: row.get(7)?,
        access_token_reference_id: row.get(8)?,
        deciding_event_id: row.get(9)?,
        deciding_event_created: row.get(10)?,
        first_received_at: row.get(12)?,
        last_received_at: row.get(13)?,
    })
}

/// The job's outcomes (normally one), or its pending state if it has none.
pub(super) fn jobs_by_job_id(db: &Connection, job_id: &str) -> rusqlite::Result<Vec<JobState>> {
    let decided: Vec<JobState> = db
        .prepare_cached(&format!(
            "select {JOB_COLUMNS} where jobs.job_id = ? order by jobs.patient_note_id"
        ))?
        .query_map([job_id], job_state)?
        .collect::<rusqlite::Result<_>>()?;
    if !decided.is_empty() {
        return Ok(decided);
    }
    db.prepare_cached(&format!(
        "select {PENDING_COLUMNS} and expected_jobs.job_id = ?"
    ))?
    .query_map([job_id], job_state)?
    .collect()
}

pub(super) fn jobs_by_note(
    db: &Connection,
    patient_note_id: &str,
) -> rusqlite::Result<Vec<JobState>> {
    db.prepare_cached(&format!(
        "select {JOB_COLUMNS} where jobs.patient_note_id = ?
         order by deciding_event_created_ns desc, jobs.job_id desc"
    ))?
    .query_map([patient_note_id], job_state)?
    .collect()
}

pub(super) fn list_jobs(db: &Connection, query: &JobQuery) -> rusqlite::Result<Vec<JobState>> {
    if let Some(ListStatus::Pending {
        submitted_before_ns,
    }) = query.status
    {
        return list_pending(db, query, submitted_before_ns);
    }
    const NEWEST_FIRST: &str =
        " order by deciding_event_created_ns desc, patient_note_id desc, job_id desc limit ?";
    const NEWEST_FIRST_INNER: &str = " order by deciding_event_created_ns desc,
        jobs.patient_note_id desc, jobs.job_id desc limit ?";
    // Each status has an index of its own, read newest first; without a
    // status filter, the newest of both are merged. The status is written
    // into the SQL (it is one of two fixed words) because SQLite uses a
    // partial index only for a query that names its condition literally.
    let statuses = match query.status {
        Some(ListStatus::Decided(status)) => vec![status],
        // Only failures have a reason.
        _ if query.narrow.failure_reason.is_some() => vec![JobStatus::Failed],
        _ => vec![JobStatus::Created, JobStatus::Failed],
    };
    let limit = i64::from(query.limit);
    let mut ranges = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    for status in statuses {
        let mut range = format!(
            "select * from (select {JOB_COLUMNS} where status = '{}'",
            status.as_str()
        );
        if let Some(since) = query.since_ns {
            range.push_str(" and deciding_event_created_ns >= ?");
            values.push(since.into());
        }
        if let Some(until) = query.narrow.until_ns {
            range.push_str(" and deciding_event_created_ns < ?");
            values.push(until.into());
        }
        for (column, value) in [
            ("failure_reason", &query.narrow.failure_reason),
            ("location_id", &query.narrow.location_id),
            (
                "jobs.access_token_reference_id",
                &query.narrow.access_token_reference_id,
            ),
        ] {
            if let Some(value) = value {
                range.push_str(&format!(" and {column} = ?"));
                values.push(value.clone().into());
            }
        }
        if let Some(after) = &query.after {
            range.push_str(
                " and (deciding_event_created_ns, jobs.patient_note_id, jobs.job_id) < (?, ?, ?)",
            );
            values.push(after.created_ns.into());
            values.push(after.patient_note_id.clone().into());
            values.push(after.job_id.clone().into());
        }
        range.push_str(NEWEST_FIRST_INNER);
        range.push(')');
        values.push(limit.into());
        ranges.push(range);
    }
    let sql = ranges.join(" union all ") + NEWEST_FIRST;
    values.push(limit.into());
    db.prepare_cached(&sql)?
        .query_map(params_from_iter(values), job_state)?
        .collect()
}

/// Pending jobs, newest submission first, over their partial index.
fn list_pending(
    db: &Connection,
    query: &JobQuery,
    submitted_before_ns: Option<i64>,
) -> rusqlite::Result<Vec<JobState>> {
    // A pending job has no reason and no location yet.
    if query.narrow.failure_reason.is_some() || query.narrow.location_id.is_some() {
        return Ok(Vec::new());
    }
    let mut sql = format!("select {PENDING_COLUMNS}");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(since) = query.since_ns {
        sql.push_str(" and submitted_ns >= ?");
        values.push(since.into());
    }
    if let Some(until) = query.narrow.until_ns {
        sql.push_str(" and submitted_ns < ?");
        values.push(until.into());
    }
    if let Some(account) = &query.narrow.access_token_reference_id {
        sql.push_str(" and access_token_reference_id = ?");
        values.push(account.clone().into());
    }
    if let Some(before) = submitted_before_ns {
        sql.push_str(" and submitted_ns < ?");
        values.push(before.into());
    }
    if let Some(after) = &query.after {
        sql.push_str(" and (submitted_ns, patient_note_id, job_id) < (?, ?, ?)");
        values.push(after.created_ns.into());
        values.push(after.patient_note_id.clone().into());
        values.push(after.job_id.clone().into());
    }
    sql.push_str(" order by submitted_ns desc, patient_note_id desc, job_id desc limit ?");
    values.push(i64::from(query.limit).into());
    db.prepare_cached(&sql)?
        .query_map(params_from_iter(values), job_state)?
        .collect()
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

/// A page of the audit trail, newest first.
pub(super) fn audit_page(db: &Connection, query: &AuditQuery) -> rusqlite::Result<Vec<AuditRow>> {
    let mut sql =
        String::from("select id, at, actor, action, target, request_id from audit_log where 1 = 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(before) = query.before_id {
        sql.push_str(" and id < ?");
        values.push(before.into());
    }
    if let Some(since) = query.since_ns {
        sql.push_str(" and at_ns >= ?");
        values.push(since.into());
    }
    if let Some(until) = query.until_ns {
        sql.push_str(" and at_ns < ?");
        values.push(until.into());
    }
    for (column, value) in [("actor", &query.actor), ("action", &query.action)] {
        if let Some(value) = value {
            sql.push_str(&format!(" and {column} = ?"));
            values.push(value.clone().into());
        }
    }
    sql.push_str(" order by id desc limit ?");
    values.push(i64::from(query.limit).into());
    db.prepare_cached(&sql)?
        .query_map(params_from_iter(values), |row| {
            Ok(AuditRow {
                id: row.get(0)?,
                at: row.get(1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                request_id: row.get(5)?,
            })
        })?
        .collect()
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
