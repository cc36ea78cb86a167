//! Durable storage: every SQL statement the service runs lives here, so a
//! second engine can take SQLite's place without touching the handlers.
//!
//! Writes go through a pool of one connection, so deliveries queue in the
//! process instead of fighting over SQLite's write lock, and each delivery is
//! one `BEGIN IMMEDIATE` transaction committed in WAL mode with
//! `synchronous = FULL`: when [`Store::record`] returns, the event and the job
//! state it implies are on disk. Status queries use a separate read-only
//! pool and never wait for the writer.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::{Envelope, JobOutcome, JobStatus, Meaning, Rank};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// What became of a delivery, as kept in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The event now decides its job's state.
    Applied,
    /// A valid outcome, outranked by the event that decides its job.
    Superseded,
    /// A type this service keeps but does not act on.
    Ignored,
    /// A patient-note event missing a field its state needs.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Superseded => "superseded",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }

    fn from_column(value: &str) -> Result<Self, sqlx::Error> {
        Ok(match value {
            "applied" => Self::Applied,
            "superseded" => Self::Superseded,
            "ignored" => Self::Ignored,
            "rejected" => Self::Rejected,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown outcome {other}").into(),
                ));
            }
        })
    }
}

/// The answer to [`Store::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed now.
    New(Outcome),
    /// The event id was recorded before, with this outcome; nothing changed.
    Duplicate(Outcome),
}

/// A verified delivery, ready to be stored.
pub struct Delivery<'a> {
    pub envelope: &'a Envelope,
    /// The body exactly as received (checked to be UTF-8).
    pub payload: &'a str,
    pub attempt: Option<i64>,
    pub received_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database did not commit within {0:?}")]
    Timeout(Duration),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Connection settings, from the configuration.
pub struct StoreOptions<'a> {
    pub database_url: &'a str,
    pub read_pool_size: u32,
    /// How long a write may wait for the lock and commit.
    pub write_timeout: Duration,
}

#[derive(Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    write_timeout: Duration,
}

impl Store {
    /// Opens (creating if missing) and migrates the database.
    pub async fn open(options: &StoreOptions<'_>) -> anyhow::Result<Self> {
        use anyhow::Context;

        let base = SqliteConnectOptions::from_str(options.database_url)
            .context("parsing database_url")?
            .busy_timeout(options.write_timeout);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.write_timeout)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true),
            )
            .await
            .context("opening the database for writing")?;
        MIGRATOR.run(&writer).await.context("applying migrations")?;
        tracing::debug!("db: writer ready, migrations applied");

        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(base.read_only(true))
            .await
            .context("opening the database for reading")?;
        tracing::debug!("db: read pool ready");

        Ok(Self {
            writer,
            reader,
            write_timeout: options.write_timeout,
        })
    }

    /// Closes both pools, letting SQLite checkpoint the WAL.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Records a delivery and the job state it implies, in one transaction.
    /// Gives up with [`StoreError::Timeout`] after the write timeout; what was
    /// not committed by then is rolled back.
    #[tracing::instrument(skip_all)]
    pub async fn record(&self, delivery: &Delivery<'_>) -> Result<Recorded, StoreError> {
        tokio::time::timeout(self.write_timeout, self.record_now(delivery))
            .await
            .map_err(|_| StoreError::Timeout(self.write_timeout))?
    }

    async fn record_now(&self, delivery: &Delivery<'_>) -> Result<Recorded, StoreError> {
        let envelope = delivery.envelope;
        let received_at = rfc3339(delivery.received_at);
        // IMMEDIATE takes the write lock up front, so the reads below see the
        // state the writes will change.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;

        let (outcome, reject_reason) = match &envelope.meaning {
            Meaning::Outcome(job) => (decide(&mut tx, job).await?, None),
            Meaning::Other => (Outcome::Ignored, None),
            Meaning::Invalid(error) => (Outcome::Rejected, Some(error.to_string())),
        };

        // The unique event id is the dedupe: a second delivery inserts nothing.
        let inserted = sqlx::query(
            "insert into events (event_id, event_type, job_id, patient_note_id, created,
                                 received_at, attempt, outcome, reject_reason, payload)
             values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             on conflict (event_id) do nothing",
        )
        .bind(&envelope.event_id)
        .bind(&envelope.event_type)
        .bind(&envelope.job_id)
        .bind(&envelope.patient_note_id)
        .bind(&envelope.created)
        .bind(&received_at)
        .bind(delivery.attempt)
        .bind(outcome.as_str())
        .bind(reject_reason)
        .bind(delivery.payload)
        .execute(&mut *tx)
        .await?;

        if inserted.rows_affected() == 0 {
            let original: String =
                sqlx::query_scalar("select outcome from events where event_id = ?")
                    .bind(&envelope.event_id)
                    .fetch_one(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Ok(Recorded::Duplicate(Outcome::from_column(&original)?));
        }

        if let Meaning::Outcome(job) = &envelope.meaning {
            match outcome {
                Outcome::Applied => upsert_job(&mut tx, job, &received_at).await?,
                _ => touch_job(&mut tx, job, &received_at).await?,
            }
        }
        tx.commit().await?;
        Ok(Recorded::New(outcome))
    }

    /// The jobs recorded under `job_id` (normally one).
    pub async fn jobs_by_job_id(&self, job_id: &str) -> Result<Vec<JobState>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "select {JOB_COLUMNS} from jobs where job_id = ? order by patient_note_id"
        ))
        .bind(job_id)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(JobState::try_from).collect()
    }

    /// The jobs of one patient note, newest decision first.
    pub async fn jobs_by_note(&self, patient_note_id: &str) -> Result<Vec<JobState>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "select {JOB_COLUMNS} from jobs where patient_note_id = ?
             order by deciding_event_created_ns desc, job_id desc"
        ))
        .bind(patient_note_id)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(JobState::try_from).collect()
    }

    /// A page of job states, newest decision first, after `query.after`.
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobState>, StoreError> {
        let mut sql =
            QueryBuilder::<Sqlite>::new(format!("select {JOB_COLUMNS} from jobs where 1 = 1"));
        if let Some(status) = query.status {
            sql.push(" and status = ").push_bind(status.as_str());
        }
        if let Some(since) = query.since_ns {
            sql.push(" and deciding_event_created_ns >= ")
                .push_bind(since);
        }
        if let Some(after) = &query.after {
            sql.push(" and (deciding_event_created_ns, patient_note_id, job_id) < (")
                .push_bind(after.created_ns)
                .push(", ")
                .push_bind(after.patient_note_id.as_str())
                .push(", ")
                .push_bind(after.job_id.as_str())
                .push(")");
        }
        sql.push(
            " order by deciding_event_created_ns desc, patient_note_id desc, job_id desc limit ",
        )
        .push_bind(i64::from(query.limit));
        let rows: Vec<JobRow> = sql.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter().map(JobState::try_from).collect()
    }

    /// The events recorded for `job_id`, in arrival order, without payloads.
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<EventSummary>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "select event_id, event_type, job_id, patient_note_id, created, received_at,
                    attempt, outcome, reject_reason
             from events where job_id = ? order by seq",
        )
        .bind(job_id)
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(EventSummary::try_from).collect()
    }

    /// True when the database answers and has every migration this build knows.
    pub async fn is_ready(&self) -> Result<bool, StoreError> {
        let applied: Option<i64> =
            sqlx::query_scalar("select max(version) from _sqlx_migrations where success = 1")
                .fetch_one(&self.reader)
                .await?;
        let known = MIGRATOR.iter().map(|m| m.version).max();
        Ok(applied >= known)
    }
}

/// Whether `job` outranks the event that now decides its job.
async fn decide(tx: &mut SqliteConnection, job: &JobOutcome) -> Result<Outcome, StoreError> {
    let current: Option<(String, i64, String)> = sqlx::query_as(
        "select status, deciding_event_created_ns, deciding_event_id
         from jobs where patient_note_id = ? and job_id = ?",
    )
    .bind(&job.patient_note_id)
    .bind(&job.job_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, created_ns, event_id)) = current else {
        return Ok(Outcome::Applied);
    };
    let current = Rank {
        status: JobStatus::from_str(&status)
            .map_err(|()| sqlx::Error::Decode(format!("unknown status {status}").into()))?,
        created_at: from_nanos(created_ns)?,
        event_id,
    };
    Ok(if job.rank > current {
        Outcome::Applied
    } else {
        Outcome::Superseded
    })
}

async fn upsert_job(
    tx: &mut SqliteConnection,
    job: &JobOutcome,
    received_at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "insert into jobs (patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                           patient_mrn, location_id, access_token_reference_id,
                           deciding_event_id, deciding_event_created, deciding_event_created_ns,
                           first_received_at, last_received_at)
         values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         on conflict (patient_note_id, job_id) do update set
             status = excluded.status,
             emr_note_id = excluded.emr_note_id,
             failure_reason = excluded.failure_reason,
             reasons = excluded.reasons,
             patient_mrn = excluded.patient_mrn,
             location_id = excluded.location_id,
             access_token_reference_id = excluded.access_token_reference_id,
             deciding_event_id = excluded.deciding_event_id,
             deciding_event_created = excluded.deciding_event_created,
             deciding_event_created_ns = excluded.deciding_event_created_ns,
             last_received_at = excluded.last_received_at",
    )
    .bind(&job.patient_note_id)
    .bind(&job.job_id)
    .bind(job.rank.status.as_str())
    .bind(&job.emr_note_id)
    .bind(&job.failure_reason)
    .bind(&job.reasons)
    .bind(&job.patient_mrn)
    .bind(&job.location_id)
    .bind(&job.access_token_reference_id)
    .bind(&job.rank.event_id)
    .bind(&job.created)
    .bind(nanos(job.rank.created_at))
    .bind(received_at)
    .bind(received_at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A superseded event changes nothing but the job's last-received time.
async fn touch_job(
    tx: &mut SqliteConnection,
    job: &JobOutcome,
    received_at: &str,
) -> Result<(), StoreError> {
    sqlx::query("update jobs set last_received_at = ? where patient_note_id = ? and job_id = ?")
        .bind(received_at)
        .bind(&job.patient_note_id)
        .bind(&job.job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Filters and position of one page of [`Store::list_jobs`].
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    /// Only jobs decided by an event created at or after this instant.
    pub since_ns: Option<i64>,
    /// Start after this job (the last one of the previous page).
    pub after: Option<JobKey>,
    pub limit: u32,
}

/// The sort key of a job in listings: newest decision first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct JobKey {
    pub created_ns: i64,
    pub patient_note_id: String,
    pub job_id: String,
}

/// A job's state as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobState {
    pub patient_note_id: String,
    pub job_id: String,
    pub status: String,
    pub emr_note_id: Option<String>,
    pub failure_reason: Option<String>,
    pub reasons: Option<serde_json::Value>,
    pub patient_mrn: Option<String>,
    pub location_id: Option<String>,
    pub access_token_reference_id: Option<String>,
    pub deciding_event_id: String,
    pub deciding_event_created: String,
    pub first_received_at: String,
    pub last_received_at: String,
    #[serde(skip)]
    pub key: JobKey,
}

const JOB_COLUMNS: &str = "patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
    patient_mrn, location_id, access_token_reference_id, deciding_event_id,
    deciding_event_created, deciding_event_created_ns, first_received_at, last_received_at";

#[derive(sqlx::FromRow)]
struct JobRow {
    patient_note_id: String,
    job_id: String,
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

impl TryFrom<JobRow> for JobState {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let reasons = row
            .reasons
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Self {
            key: JobKey {
                created_ns: row.deciding_event_created_ns,
                patient_note_id: row.patient_note_id.clone(),
                job_id: row.job_id.clone(),
            },
            patient_note_id: row.patient_note_id,
            job_id: row.job_id,
            status: row.status,
            emr_note_id: row.emr_note_id,
            failure_reason: row.failure_reason,
            reasons,
            patient_mrn: row.patient_mrn,
            location_id: row.location_id,
            access_token_reference_id: row.access_token_reference_id,
            deciding_event_id: row.deciding_event_id,
            deciding_event_created: row.deciding_event_created,
            first_received_at: row.first_received_at,
            last_received_at: row.last_received_at,
        })
    }
}

/// An entry of the event log, without its payload (patient data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSummary {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub job_id: Option<String>,
    pub patient_note_id: Option<String>,
    pub created: Option<String>,
    pub received_at: String,
    pub attempt: Option<i64>,
    pub outcome: Outcome,
    pub reject_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    event_id: String,
    event_type: Option<String>,
    job_id: Option<String>,
    patient_note_id: Option<String>,
    created: Option<String>,
    received_at: String,
    attempt: Option<i64>,
    outcome: String,
    reject_reason: Option<String>,
}

impl TryFrom<EventRow> for EventSummary {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(Self {
            outcome: Outcome::from_column(&row.outcome)?,
            event_id: row.event_id,
            event_type: row.event_type,
            job_id: row.job_id,
            patient_note_id: row.patient_note_id,
            created: row.created,
            received_at: row.received_at,
            attempt: row.attempt,
            reject_reason: row.reject_reason,
        })
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("a UTC time always formats as RFC 3339")
}

/// Instants are stored as i64 nanoseconds; parsing already refused the rest.
fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).expect("created was range-checked when parsed")
}

fn from_nanos(ns: i64) -> Result<OffsetDateTime, sqlx::Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
