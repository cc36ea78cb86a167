//! Expected jobs on the read pool's connections: registrations,
//! idempotency keys of submissions, settling and the recovery sweep's
//! lease. Each is one transaction of its own, beside the writer's batches.

use sqlx::postgres::PgPool;

use crate::domain::ChangeKind;
use crate::store::{Claim, KeyClaim, Registered, Registration, SubmissionEnd};

pub(super) async fn register(pool: &PgPool, job: &Registration) -> sqlx::Result<Registered> {
    let mut tx = pool.begin().await?;
    let registered = register_in(&mut tx, job).await?;
    tx.commit().await?;
    Ok(registered)
}

/// Claims an idempotency key, after forgetting expired ones.
pub(super) async fn begin_submission(pool: &PgPool, claim: &KeyClaim) -> sqlx::Result<Claim> {
    let mut tx = pool.begin().await?;
    sqlx::query("delete from submissions where created_ns < $1")
        .bind(claim.expired_before_ns)
        .execute(&mut *tx)
        .await?;
    // A second request with the key waits here for the first's commit.
    let claimed = sqlx::query(
        "insert into submissions (idempotency_key, request_mac, state, created_ns)
         values ($1, $2, 'in_flight', $3)
         on conflict (idempotency_key) do nothing",
    )
    .bind(&claim.key)
    .bind(&claim.mac)
    .bind(claim.now_ns)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let result = if claimed {
        Claim::Claimed
    } else {
        let (mac, state, job_id, claimed_ns): (String, String, Option<String>, i64) =
            sqlx::query_as(
                "select request_mac, state, job_id, created_ns from submissions
                 where idempotency_key = $1",
            )
            .bind(&claim.key)
            .fetch_one(&mut *tx)
            .await?;
        Claim::of(claim, &mac, &state, job_id, claimed_ns)
    };
    tx.commit().await?;
    Ok(result)
}

/// Settles a submission and, when it created a job, registers the job in
/// the same transaction.
pub(super) async fn end_submission(
    pool: &PgPool,
    key: Option<&str>,
    end: &SubmissionEnd,
) -> sqlx::Result<Option<Registered>> {
    let mut tx = pool.begin().await?;
    let registered = match end {
        SubmissionEnd::Done(job) => {
            sqlx::query(
                "update submissions set state = 'done', job_id = $1
                 where idempotency_key = $2",
            )
            .bind(&job.job_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            Some(register_in(&mut tx, job).await?)
        }
        SubmissionEnd::Unknown => {
            sqlx::query("update submissions set state = 'unknown' where idempotency_key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            None
        }
        SubmissionEnd::Forget => {
            sqlx::query("delete from submissions where idempotency_key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            None
        }
    };
    tx.commit().await?;
    Ok(registered)
}

/// Marks expected jobs whose outcome is in as resolved.
pub(super) async fn settle_resolved(pool: &PgPool) -> sqlx::Result<u64> {
    sqlx::query(
        "update expected_jobs set resolved = true
         where not resolved
           and exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
    )
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}

/// Takes the recovery sweep's lease if it has expired.
pub(super) async fn take_lease(
    pool: &PgPool,
    holder: &str,
    now_ns: i64,
    until_ns: i64,
) -> sqlx::Result<bool> {
    sqlx::query(
        "update reconcile_lease set holder = $1, expires_ns = $3
         where id = 1 and expires_ns <= $2",
    )
    .bind(holder)
    .bind(now_ns)
    .bind(until_ns)
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Records an expected job unless its id is known with another note. Two
/// registrations of one new job at once: the second's insert waits for the
/// first's commit and skips; it then reads the row the first wrote.
async fn register_in(
    tx: &mut sqlx::PgTransaction<'_>,
    job: &Registration,
) -> Result<Registered, sqlx::Error> {
    for _ in 0..2 {
        let (outcome_note, expected_note, inserted): (Option<String>, Option<String>, bool) =
            sqlx::query_as(
                "with outcome as (select patient_note_id from jobs where job_id = $1 limit 1),
                      existing as (select patient_note_id from expected_jobs where job_id = $1),
                      inserted as (
                          insert into expected_jobs (job_id, patient_note_id, submitted_at,
                                                     submitted_ns, access_token_reference_id,
                                                     registered_by, resolved)
                          select $1, $2, $3, $4, $5, $6, exists (select 1 from outcome)
                          where not exists (select 1 from existing)
                            and not exists (select 1 from outcome where patient_note_id <> $2)
                          on conflict (job_id) do nothing
                          returning 1)
                 select (select patient_note_id from outcome),
                        (select patient_note_id from existing),
                        exists (select 1 from inserted)",
            )
            .bind(&job.job_id)
            .bind(&job.patient_note_id)
            .bind(job.submitted_text())
            .bind(job.submitted_ns())
            .bind(&job.access_token_reference_id)
            .bind(&job.registered_by)
            .fetch_one(&mut **tx)
            .await?;
        let mine = |note: &Option<String>| note.as_ref().is_none_or(|n| *n == job.patient_note_id);
        if !mine(&outcome_note) || !mine(&expected_note) {
            return Ok(Registered::Conflict);
        }
        if expected_note.is_some() {
            return Ok(Registered::Known);
        }
        if inserted && outcome_note.is_some() {
            return Ok(Registered::Known);
        }
        if inserted {
            // After the insert: its row lock orders the job's changes.
            sqlx::query(
                "insert into changes (job_id, patient_note_id, kind, at_ns) values ($1, $2, $3, $4)",
            )
            .bind(&job.job_id)
            .bind(&job.patient_note_id)
            .bind(ChangeKind::Registered.as_str())
            .bind(job.submitted_ns())
            .execute(&mut **tx)
            .await?;
            return Ok(Registered::New);
        }
        // Another registration of this job committed meanwhile: read it.
    }
    Err(sqlx::Error::RowNotFound)
}
