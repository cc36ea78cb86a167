//! Status queries, as single statements on the read pool. Each mirrors the
//! SQLite engine's query of the same name (the listings are the same text,
//! from `store::sql`), so answers are identical.

use sqlx::Row;
use sqlx::postgres::{PgArguments, PgPool, PgRow, Postgres};
use sqlx::query::Query;

use super::outcome_column;
use crate::domain::JobStatus;
use crate::store::sql::{self, Columns, POSTGRES, Value};
use crate::store::{
    DaySummary, EventSummary, ExpectedJob, FailureGroup, HOUR_NS, HourOutcomes, JobQuery, JobState,
    LastDelivery, PendingSummary, RepeatedDelivery, Source, TimeToEmr,
};

impl Columns for PgRow {
    type Error = sqlx::Error;

    fn text(&self, index: usize) -> sqlx::Result<Option<String>> {
        self.try_get(index)
    }

    fn int(&self, index: usize) -> sqlx::Result<Option<i64>> {
        self.try_get(index)
    }

    fn invalid(message: String) -> sqlx::Error {
        sqlx::Error::Decode(message.into())
    }
}

fn job_states(rows: Vec<PgRow>, overdue_before_ns: i64) -> sqlx::Result<Vec<JobState>> {
    rows.iter()
        .map(|row| sql::job_state(row, overdue_before_ns))
        .collect()
}

/// Binds a built statement's parameters in order.
pub(super) fn bind_all(
    mut statement: Query<'_, Postgres, PgArguments>,
    values: Vec<Value>,
) -> Query<'_, Postgres, PgArguments> {
    for value in values {
        statement = match value {
            Value::Int(int) => statement.bind(int),
            Value::Text(text) => statement.bind(text),
        };
    }
    statement
}

pub(super) async fn jobs_by_job_id(
    pool: &PgPool,
    job_id: &str,
    overdue_before_ns: i64,
) -> sqlx::Result<Vec<JobState>> {
    // The outcomes; a pending state only for a job that has none (a
    // second statement, for the rarer case, keeps the common one simple).
    let decided = format!(
        "{} where jobs.job_id = $1 order by jobs.patient_note_id",
        POSTGRES.decided_jobs()
    );
    let rows = sqlx::query(&decided).bind(job_id).fetch_all(pool).await?;
    if !rows.is_empty() {
        return job_states(rows, overdue_before_ns);
    }
    let pending = format!("{} and expected_jobs.job_id = $1", POSTGRES.pending_jobs());
    let rows = sqlx::query(&pending).bind(job_id).fetch_all(pool).await?;
    job_states(rows, overdue_before_ns)
}

pub(super) async fn jobs_by_note(
    pool: &PgPool,
    patient_note_id: &str,
) -> sqlx::Result<Vec<JobState>> {
    let sql = format!(
        "{} where jobs.patient_note_id = $1
         order by deciding_event_created_ns desc, jobs.job_id desc",
        POSTGRES.decided_jobs()
    );
    let rows = sqlx::query(&sql)
        .bind(patient_note_id)
        .fetch_all(pool)
        .await?;
    job_states(rows, i64::MIN)
}

pub(super) async fn list_jobs(
    pool: &PgPool,
    query: &JobQuery,
    overdue_before_ns: i64,
) -> sqlx::Result<Vec<JobState>> {
    let listing = POSTGRES.list_jobs(query, overdue_before_ns);
    let rows = bind_all(sqlx::query(&listing.sql), listing.values)
        .fetch_all(pool)
        .await?;
    job_states(rows, overdue_before_ns)
}

pub(super) async fn pending_summary(
    pool: &PgPool,
    overdue_before_ns: i64,
) -> Result<PendingSummary, sqlx::Error> {
    let (pending, overdue, oldest_submitted_ns): (i64, i64, Option<i64>) = sqlx::query_as(
        "select count(*), count(*) filter (where submitted_ns < $1), min(submitted_ns)
         from expected_jobs
         where not resolved
           and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
    )
    .bind(overdue_before_ns)
    .fetch_one(pool)
    .await?;
    Ok(PendingSummary {
        pending,
        overdue,
        oldest_submitted_ns,
    })
}

pub(super) async fn overdue_jobs(
    pool: &PgPool,
    before_ns: i64,
    limit: u32,
) -> Result<Vec<ExpectedJob>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "select job_id, access_token_reference_id from expected_jobs
         where not resolved and submitted_ns < $1
           and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)
         order by submitted_ns, patient_note_id, job_id limit $2",
    )
    .bind(before_ns)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, access_token_reference_id)| ExpectedJob {
            job_id,
            access_token_reference_id,
        })
        .collect())
}

pub(super) async fn job_events(
    pool: &PgPool,
    job_id: &str,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "select event_id, event_type, job_id, patient_note_id, created, received_at,
                attempt, outcome, reject_reason, source
         from events where job_id = $1 order by seq",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(EventSummary {
                event_id: row.try_get(0)?,
                event_type: row.try_get(1)?,
                job_id: row.try_get(2)?,
                patient_note_id: row.try_get(3)?,
                created: row.try_get(4)?,
                received_at: row.try_get(5)?,
                attempt: row.try_get(6)?,
                outcome: outcome_column(row, 7)?,
                reject_reason: row.try_get(8)?,
                source: Source::parse(row.try_get(9)?)
                    .ok_or_else(|| sqlx::Error::Decode("an unknown event source".into()))?,
            })
        })
        .collect()
}

/// The newest migration applied successfully.
pub(super) async fn latest_migration(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await
}

pub(super) async fn jobs_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select 'created', count(*) from jobs where status = 'created'
         union all select 'failed', count(*) from jobs where status = 'failed'",
    )
    .fetch_all(pool)
    .await
}

/// Outcomes decided in `[from_ns, to_ns)`; as the SQLite engine's.
pub(super) async fn day_summary(
    pool: &PgPool,
    from_ns: i64,
    to_ns: i64,
) -> Result<DaySummary, sqlx::Error> {
    let (created, failed): (i64, i64) = sqlx::query_as(
        "select (select count(*) from jobs where status = 'created'
                   and deciding_event_created_ns >= $1 and deciding_event_created_ns < $2),
                (select count(*) from jobs where status = 'failed'
                   and deciding_event_created_ns >= $1 and deciding_event_created_ns < $2)",
    )
    .bind(from_ns)
    .bind(to_ns)
    .fetch_one(pool)
    .await?;
    let failures = sqlx::query(
        "select failure_reason, count(*), min(deciding_event_created_ns),
                max(deciding_event_created_ns)
         from jobs where status = 'failed'
           and deciding_event_created_ns >= $1 and deciding_event_created_ns < $2
         group by failure_reason order by count(*) desc, failure_reason",
    )
    .bind(from_ns)
    .bind(to_ns)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(FailureGroup {
            reason: row.try_get(0)?,
            count: row.try_get(1)?,
            first_ns: row.try_get(2)?,
            last_ns: row.try_get(3)?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(DaySummary {
        created,
        failed,
        failures,
    })
}

/// Outcomes decided in `[from_ns, to_ns)` by the hour since `from_ns`; as
/// the SQLite engine's.
pub(super) async fn outcomes_by_hour(
    pool: &PgPool,
    from_ns: i64,
    to_ns: i64,
) -> Result<Vec<HourOutcomes>, sqlx::Error> {
    let mut hours: Vec<HourOutcomes> = Vec::new();
    for status in [JobStatus::Created, JobStatus::Failed] {
        let counts: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "select (deciding_event_created_ns - $1) / $3, count(*)
             from jobs where status = '{}'
               and deciding_event_created_ns >= $1 and deciding_event_created_ns < $2
             group by 1",
            status.as_str()
        ))
        .bind(from_ns)
        .bind(to_ns)
        .bind(HOUR_NS)
        .fetch_all(pool)
        .await?;
        crate::store::add_hour_counts(&mut hours, status, counts);
    }
    Ok(hours)
}

/// Time to the EMR of up to `limit` registered jobs created in
/// `[from_ns, to_ns)`; as the SQLite engine's.
pub(super) async fn times_to_emr(
    pool: &PgPool,
    from_ns: i64,
    to_ns: i64,
    limit: u32,
) -> Result<Vec<TimeToEmr>, sqlx::Error> {
    let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
        "select jobs.location_id, jobs.deciding_event_created_ns - expected_jobs.submitted_ns
         from jobs join expected_jobs on expected_jobs.job_id = jobs.job_id
         where jobs.status = 'created'
           and jobs.deciding_event_created_ns >= $1 and jobs.deciding_event_created_ns < $2
         order by jobs.deciding_event_created_ns limit $3",
    )
    .bind(from_ns)
    .bind(to_ns)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(location_id, nanos)| TimeToEmr { location_id, nanos })
        .collect())
}

pub(super) async fn last_delivery(pool: &PgPool) -> Result<Option<LastDelivery>, sqlx::Error> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "select received_at, event_type from events where source = 'webhook'
         order by seq desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(received_at, event_type)| LastDelivery {
        received_at,
        event_type,
    }))
}

pub(super) async fn jobs_by_emr_note(
    pool: &PgPool,
    emr_note_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select job_id from jobs where emr_note_id = $1 order by job_id limit 10")
        .bind(emr_note_id)
        .fetch_all(pool)
        .await
}

pub(super) async fn job_of_event(
    pool: &PgPool,
    event_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let job: Option<Option<String>> =
        sqlx::query_scalar("select job_id from events where event_id = $1")
            .bind(event_id)
            .fetch_optional(pool)
            .await?;
    Ok(job.flatten())
}

pub(super) async fn repeated_deliveries(
    pool: &PgPool,
    job_id: &str,
) -> Result<Vec<RepeatedDelivery>, sqlx::Error> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "select r.event_id, r.received_at, r.attempt
         from events e join repeated_deliveries r on r.event_id = e.event_id
         where e.job_id = $1 order by r.received_at",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, received_at, attempt)| RepeatedDelivery {
            event_id,
            received_at,
            attempt,
        })
        .collect())
}
