//! Status queries, as single statements on the read pool. Each mirrors the
//! SQLite engine's query of the same name, so answers are identical.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use super::outcome_column;
use crate::domain::JobStatus;
use crate::store::{
    AuditQuery, AuditRow, DaySummary, EventSummary, ExpectedJob, FailureGroup, JobKey, JobQuery,
    JobState, LastDelivery, ListStatus, PendingSummary, RepeatedDelivery, Source,
};

/// A job with an outcome, and when it was submitted if it was registered.
const JOB_COLUMNS: &str = "jobs.patient_note_id, jobs.job_id, status, emr_note_id,
    failure_reason, reasons, patient_mrn, location_id, jobs.access_token_reference_id,
    deciding_event_id, deciding_event_created, deciding_event_created_ns, first_received_at,
    last_received_at, expected_jobs.submitted_at
    from jobs left join expected_jobs on expected_jobs.job_id = jobs.job_id";

/// A pending job, in the columns of [`JOB_COLUMNS`]. `resolved` may lag
/// behind an outcome another replica committed; `jobs` says for sure.
const PENDING_COLUMNS: &str = "patient_note_id, job_id, 'pending'::text, null::text, null::text,
    null::text, null::text, null::text, access_token_reference_id, null::text, null::text,
    submitted_ns, null::text, null::text, submitted_at
    from expected_jobs
    where not resolved
      and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)";

/// Reads a row selected with [`JOB_COLUMNS`] or [`PENDING_COLUMNS`].
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
        overdue: false,
        submitted_at: row.try_get(14)?,
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
    // The outcomes; a pending state only for a job that has none (a
    // second statement, for the rarer case, keeps the common one simple).
    let decided =
        format!("select {JOB_COLUMNS} where jobs.job_id = $1 order by jobs.patient_note_id");
    let jobs = job_states(sqlx::query(&decided).bind(job_id).fetch_all(pool).await?)?;
    if !jobs.is_empty() {
        return Ok(jobs);
    }
    let pending = format!("select {PENDING_COLUMNS} and expected_jobs.job_id = $1");
    job_states(sqlx::query(&pending).bind(job_id).fetch_all(pool).await?)
}

pub(super) async fn jobs_by_note(
    pool: &PgPool,
    patient_note_id: &str,
) -> Result<Vec<JobState>, sqlx::Error> {
    let sql = format!(
        "select {JOB_COLUMNS} where jobs.patient_note_id = $1
         order by deciding_event_created_ns desc, jobs.job_id desc"
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
    if let Some(ListStatus::Pending {
        submitted_before_ns,
    }) = query.status
    {
        return list_pending(pool, query, submitted_before_ns).await;
    }
    const NEWEST_FIRST: &str =
        " order by deciding_event_created_ns desc, patient_note_id desc, job_id desc limit $1";
    const NEWEST_FIRST_INNER: &str = " order by deciding_event_created_ns desc,
        jobs.patient_note_id desc, jobs.job_id desc limit $1";
    let statuses = match query.status {
        Some(ListStatus::Decided(status)) => vec![status],
        // Only failures have a reason.
        _ if query.narrow.failure_reason.is_some() => vec![JobStatus::Failed],
        _ => vec![JobStatus::Created, JobStatus::Failed],
    };
    // $1 is the limit; then each bound asked for, in this order
    // (PostgreSQL refuses a parameter no clause uses). Every range of the
    // union uses the same parameters.
    let narrow = &query.narrow;
    let mut conditions = String::new();
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if query.since_ns.is_some() {
        conditions.push_str(&format!(" and deciding_event_created_ns >= {}", next()));
    }
    if narrow.until_ns.is_some() {
        conditions.push_str(&format!(" and deciding_event_created_ns < {}", next()));
    }
    let texts = [
        ("failure_reason", &narrow.failure_reason),
        ("location_id", &narrow.location_id),
        (
            "jobs.access_token_reference_id",
            &narrow.access_token_reference_id,
        ),
    ];
    for (column, value) in texts {
        if value.is_some() {
            conditions.push_str(&format!(" and {column} = {}", next()));
        }
    }
    if query.after.is_some() {
        conditions.push_str(&format!(
            " and (deciding_event_created_ns, jobs.patient_note_id, jobs.job_id) < ({}, {}, {})",
            next(),
            next(),
            next()
        ));
    }
    let ranges: Vec<String> = statuses
        .iter()
        .map(|status| {
            format!(
                "(select {JOB_COLUMNS} where status = '{}'{conditions}{NEWEST_FIRST_INNER})",
                status.as_str()
            )
        })
        .collect();
    let sql = format!(
        "select * from ({}) as merged{NEWEST_FIRST}",
        ranges.join(" union all ")
    );
    let mut statement = sqlx::query(&sql).bind(i64::from(query.limit));
    if let Some(since) = query.since_ns {
        statement = statement.bind(since);
    }
    if let Some(until) = narrow.until_ns {
        statement = statement.bind(until);
    }
    for (_, value) in texts {
        if let Some(value) = value {
            statement = statement.bind(value.as_str());
        }
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

/// Pending jobs, newest submission first, over their partial index.
async fn list_pending(
    pool: &PgPool,
    query: &JobQuery,
    submitted_before_ns: Option<i64>,
) -> Result<Vec<JobState>, sqlx::Error> {
    // A pending job has no reason and no location yet.
    if query.narrow.failure_reason.is_some() || query.narrow.location_id.is_some() {
        return Ok(Vec::new());
    }
    let mut sql = format!("select {PENDING_COLUMNS}");
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if query.since_ns.is_some() {
        sql.push_str(&format!(" and submitted_ns >= {}", next()));
    }
    if submitted_before_ns.is_some() {
        sql.push_str(&format!(" and submitted_ns < {}", next()));
    }
    if query.narrow.until_ns.is_some() {
        sql.push_str(&format!(" and submitted_ns < {}", next()));
    }
    if query.narrow.access_token_reference_id.is_some() {
        sql.push_str(&format!(" and access_token_reference_id = {}", next()));
    }
    if query.after.is_some() {
        sql.push_str(&format!(
            " and (submitted_ns, patient_note_id, job_id) < ({}, {}, {})",
            next(),
            next(),
            next()
        ));
    }
    sql.push_str(" order by submitted_ns desc, patient_note_id desc, job_id desc limit $1");
    let mut statement = sqlx::query(&sql).bind(i64::from(query.limit));
    if let Some(since) = query.since_ns {
        statement = statement.bind(since);
    }
    if let Some(before) = submitted_before_ns {
        statement = statement.bind(before);
    }
    if let Some(until) = query.narrow.until_ns {
        statement = statement.bind(until);
    }
    if let Some(account) = &query.narrow.access_token_reference_id {
        statement = statement.bind(account.as_str());
    }
    if let Some(after) = &query.after {
        statement = statement
            .bind(after.created_ns)
            .bind(after.patient_note_id.as_str())
            .bind(after.job_id.as_str());
    }
    job_states(statement.fetch_all(pool).await?)
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

pub(super) async fn audit_page(
    pool: &PgPool,
    query: &AuditQuery,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut sql =
        String::from("select id, at, actor, action, target, request_id from audit_log where true");
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let numbers = [
        ("id <", query.before_id),
        ("at_ns >=", query.since_ns),
        ("at_ns <", query.until_ns),
    ];
    for (condition, value) in numbers {
        if value.is_some() {
            sql.push_str(&format!(" and {condition} {}", next()));
        }
    }
    let texts = [("actor", &query.actor), ("action", &query.action)];
    for (column, value) in texts {
        if value.is_some() {
            sql.push_str(&format!(" and {column} = {}", next()));
        }
    }
    sql.push_str(" order by id desc limit $1");
    let mut statement = sqlx::query(&sql).bind(i64::from(query.limit));
    for value in numbers.iter().filter_map(|(_, value)| *value) {
        statement = statement.bind(value);
    }
    for value in texts.iter().filter_map(|(_, value)| value.as_deref()) {
        statement = statement.bind(value);
    }
    statement
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditRow {
                id: row.try_get(0)?,
                at: row.try_get(1)?,
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                target: row.try_get(4)?,
                request_id: row.try_get(5)?,
            })
        })
        .collect()
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
