//! Status queries, as single statements on the read pool. Each mirrors the
//! SQLite engine's query of the same name, so answers are identical.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::outcome_column;
use crate::domain::JobStatus;
use crate::store::{EventSummary, JobKey, JobQuery, JobState};

const JOB_COLUMNS: &str = "patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
    patient_mrn, location_id, access_token_reference_id, deciding_event_id,
    deciding_event_created, deciding_event_created_ns, first_received_at, last_received_at";

/// Reads a row selected with [`JOB_COLUMNS`].
fn job_state(row: &PgRow) -> Result<JobState, sqlx::Error> {
    let patient_note_id: String = row.try_get(0)?;
    let job_id: String = row.try_get(1)?;
    let reasons = row
        .try_get::<Option<String>, _>(5)?
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(JobState {
        key: JobKey {
            created_ns: row.try_get(11)?,
            patient_note_id: patient_note_id.clone(),
            job_id: job_id.clone(),
        },
        patient_note_id,
        job_id,
        status: row.try_get(2)?,
        emr_note_id: row.try_get(3)?,
        failure_reason: row.try_get(4)?,
        reasons,
        patient_mrn: row.try_get(6)?,
        location_id: row.try_get(7)?,
        access_token_reference_id: row.try_get(8)?,
        deciding_event_id: row.try_get(9)?,
        deciding_event_created: row.try_get(10)?,
        first_received_at: row.try_get(12)?,
        last_received_at: row.try_get(13)?,
    })
}

fn job_states(rows: Vec<PgRow>) -> Result<Vec<JobState>, sqlx::Error> {
    rows.iter().map(job_state).collect()
}

pub(super) async fn jobs_by_job_id(
    pool: &PgPool,
    job_id: &str,
) -> Result<Vec<JobState>, sqlx::Error> {
    let sql = format!("select {JOB_COLUMNS} from jobs where job_id = $1 order by patient_note_id");
    job_states(sqlx::query(&sql).bind(job_id).fetch_all(pool).await?)
}

pub(super) async fn jobs_by_note(
    pool: &PgPool,
    patient_note_id: &str,
) -> Result<Vec<JobState>, sqlx::Error> {
    let sql = format!(
        "select {JOB_COLUMNS} from jobs where patient_note_id = $1
         order by deciding_event_created_ns desc, job_id desc"
    );
    job_states(
        sqlx::query(&sql)
            .bind(patient_note_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Newest first, one partial index per status, merged when no status is
/// asked for (as in the SQLite engine).
pub(super) async fn list_jobs(
    pool: &PgPool,
    query: &JobQuery,
) -> Result<Vec<JobState>, sqlx::Error> {
    const NEWEST_FIRST: &str =
        " order by deciding_event_created_ns desc, patient_note_id desc, job_id desc limit $1";
    let statuses = match query.status {
        Some(status) => vec![status],
        None => vec![JobStatus::Created, JobStatus::Failed],
    };
    // $1 is the limit; then the since bound and the position, each only
    // when asked for (PostgreSQL refuses a parameter no clause uses).
    let since = query.since_ns.map(|_| "$2");
    let position = match (&query.after, since) {
        (None, _) => None,
        (Some(_), Some(_)) => Some("($3, $4, $5)"),
        (Some(_), None) => Some("($2, $3, $4)"),
    };
    let mut ranges = Vec::new();
    for status in statuses {
        let mut range = format!(
            "(select {JOB_COLUMNS} from jobs where status = '{}'",
            status.as_str()
        );
        if let Some(since) = since {
            range.push_str(&format!(" and deciding_event_created_ns >= {since}"));
        }
        if let Some(position) = position {
            range.push_str(&format!(
                " and (deciding_event_created_ns, patient_note_id, job_id) < {position}"
            ));
        }
        range.push_str(NEWEST_FIRST);
        range.push(')');
        ranges.push(range);
    }
    let sql = format!(
        "select * from ({}) as merged{NEWEST_FIRST}",
        ranges.join(" union all ")
    );
    let mut statement = sqlx::query(&sql).bind(i64::from(query.limit));
    if let Some(since) = query.since_ns {
        statement = statement.bind(since);
    }
    if let Some(after) = &query.after {
        statement = statement
            .bind(after.created_ns)
            .bind(after.patient_note_id.as_str())
            .bind(after.job_id.as_str());
    }
    let rows = statement.fetch_all(pool).await?;
    job_states(rows)
}

pub(super) async fn job_events(
    pool: &PgPool,
    job_id: &str,
) -> Result<Vec<EventSummary>, sqlx::Error> {
    let rows = sqlx::query(
        "select event_id, event_type, job_id, patient_note_id, created, received_at,
                attempt, outcome, reject_reason
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
