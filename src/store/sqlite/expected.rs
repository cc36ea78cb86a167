//! Expected jobs on the write connection: registrations, idempotency keys
//! of submissions, settling and the recovery sweep's lease.

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use crate::domain::ChangeKind;
use crate::store::{Claim, KeyClaim, Registered, Registration, SubmissionEnd};

/// Records an expected job, unless the job id is known with another note.
/// Its outcome may be in already: then it is resolved from the start;
/// otherwise its registration is a change in the feed.
pub(super) fn register(tx: &Transaction<'_>, job: &Registration) -> rusqlite::Result<Registered> {
    let outcome_note: Option<String> = tx
        .prepare_cached("select patient_note_id from jobs where job_id = ? limit 1")?
        .query_row([&job.job_id], |row| row.get(0))
        .optional()?;
    let expected_note: Option<String> = tx
        .prepare_cached("select patient_note_id from expected_jobs where job_id = ?")?
        .query_row([&job.job_id], |row| row.get(0))
        .optional()?;
    if [&outcome_note, &expected_note]
        .into_iter()
        .flatten()
        .any(|note| *note != job.patient_note_id)
    {
        return Ok(Registered::Conflict);
    }
    if expected_note.is_some() {
        return Ok(Registered::Known);
    }
    tx.prepare_cached(
        "insert into expected_jobs (job_id, patient_note_id, submitted_at, submitted_ns,
                                    access_token_reference_id, registered_by, resolved)
         values (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        job.job_id,
        job.patient_note_id,
        job.submitted_text(),
        job.submitted_ns(),
        job.access_token_reference_id,
        job.registered_by,
        outcome_note.is_some(),
    ])?;
    if outcome_note.is_some() {
        return Ok(Registered::Known);
    }
    tx.prepare_cached(super::feed::INSERT_CHANGE)?
        .execute(params![
            job.job_id,
            job.patient_note_id,
            ChangeKind::Registered.as_str(),
            job.submitted_ns(),
        ])?;
    Ok(Registered::New)
}

/// Claims an idempotency key, after forgetting expired ones.
pub(super) fn begin_submission(
    db: &mut rusqlite::Connection,
    claim: &KeyClaim,
) -> rusqlite::Result<Claim> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached("delete from submissions where created_ns < ?")?
        .execute([claim.expired_before_ns])?;
    let existing: Option<(String, String, Option<String>, i64)> = tx
        .prepare_cached(
            "select request_mac, state, job_id, created_ns from submissions
             where idempotency_key = ?",
        )?
        .query_row([&claim.key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let result = match existing {
        None => {
            tx.prepare_cached(
                "insert into submissions (idempotency_key, request_mac, state, created_ns)
                 values (?, ?, 'in_flight', ?)",
            )?
            .execute(params![claim.key, claim.mac, claim.now_ns])?;
            Claim::Claimed
        }
        Some((mac, state, job_id, claimed_ns)) => {
            Claim::of(claim, &mac, &state, job_id, claimed_ns)
        }
    };
    tx.commit()?;
    Ok(result)
}

/// Settles a submission and, when it created a job, registers the job in
/// the same transaction.
pub(super) fn end_submission(
    db: &mut rusqlite::Connection,
    key: Option<&str>,
    end: &SubmissionEnd,
) -> rusqlite::Result<Option<Registered>> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let registered = match end {
        SubmissionEnd::Done(job) => {
            if let Some(key) = key {
                tx.prepare_cached(
                    "update submissions set state = 'done', job_id = ? where idempotency_key = ?",
                )?
                .execute([&job.job_id, key])?;
            }
            Some(register(&tx, job)?)
        }
        SubmissionEnd::Unknown => {
            if let Some(key) = key {
                tx.prepare_cached(
                    "update submissions set state = 'unknown' where idempotency_key = ?",
                )?
                .execute([key])?;
            }
            None
        }
        SubmissionEnd::Forget => {
            if let Some(key) = key {
                tx.prepare_cached("delete from submissions where idempotency_key = ?")?
                    .execute([key])?;
            }
            None
        }
    };
    tx.commit()?;
    Ok(registered)
}

/// Takes the recovery sweep's lease if it has expired.
pub(super) fn take_lease(
    db: &mut rusqlite::Connection,
    holder: &str,
    now_ns: i64,
    until_ns: i64,
) -> rusqlite::Result<bool> {
    let taken = db
        .prepare_cached(
            "update reconcile_lease set holder = ?1, expires_ns = ?3
             where id = 1 and expires_ns <= ?2",
        )?
        .execute(params![holder, now_ns, until_ns])?;
    Ok(taken == 1)
}

/// Marks expected jobs whose outcome is in as resolved.
pub(super) fn settle_resolved(db: &mut rusqlite::Connection) -> rusqlite::Result<u64> {
    let settled = db
        .prepare_cached(
            "update expected_jobs set resolved = 1
             where resolved = 0 and exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)",
        )?
        .execute([])?;
    Ok(settled as u64)
}
