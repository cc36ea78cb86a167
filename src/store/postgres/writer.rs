//! This replica's writer: group commit behind durable acknowledgements,
//! safe beside other replicas writing the same database.
//!
//! Deliveries queue in a bounded channel. The writer task takes all that
//! are waiting (up to the batch size) and applies them in one transaction
//! over the connection it owns, then answers each after the commit:
//!
//! 1. The events go into the log in one multi-row insert (`unnest` arrays,
//!    sorted by event id), skipping ids already there. An id another
//!    replica is inserting right now makes the insert wait for that
//!    transaction, so a `duplicate` is only answered once the original is
//!    committed. Outcome events are labelled `applied` provisionally.
//! 2. The new outcome events' jobs are upserted in one statement (sorted by
//!    key), replacing a job's state only where the new event outranks the
//!    deciding one: the comparison runs on the locked, latest row, so it
//!    holds whichever replica each event lands on. Events it did not apply
//!    are then relabelled `superseded`, in the same transaction.
//!
//! Every transaction takes event ids, then job keys, each in sorted order,
//! so two replicas' batches cannot deadlock. A batch never holds two
//! deliveries of one event id or one job (a second one starts the next
//! batch), which keeps each upsert to one row per key and the labels equal
//! to those of the SQLite engine, which applies deliveries one by one.
//!
//! A deadlock, serialization failure, lock timeout or lost connection is
//! retried once (on a new connection if the old one is gone); then every
//! delivery of the batch gets the error, and nothing of it is visible.

use std::collections::HashSet;
use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Row};
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as Deadline;

use super::cause;
use crate::domain::{JobOutcome, Meaning};
use crate::monitoring;
use crate::store::{Delivery, Outcome, Recorded, StoreError, StoreOptions};

// `Stop` is sent once; boxing every `Write` to shrink it would cost an
// allocation per delivery.
#[allow(clippy::large_enum_variant)]
pub(super) enum Command {
    Write(Write),
    /// The readiness probe: a durable write over the writer's connection.
    Probe(oneshot::Sender<Result<(), StoreError>>),
    /// Finish what is queued before this, close the connection, then answer.
    Stop(oneshot::Sender<()>),
}

pub(super) struct Write {
    pub delivery: Delivery,
    pub reply: oneshot::Sender<Result<Recorded, StoreError>>,
    /// When the delivery's handler stops waiting for this write.
    pub deadline: Deadline,
}

/// Starts the writer task; it connects when the first write arrives.
pub(super) fn start(connect: PgConnectOptions, options: &StoreOptions) -> mpsc::Sender<Command> {
    let (sender, receiver) = mpsc::channel(options.write_queue_capacity);
    let writer = Writer {
        connect,
        connection: None,
        batch_size: options.write_batch_size.max(1),
        timeout: options.write_timeout,
    };
    tokio::spawn(writer.run(receiver));
    sender
}

struct Writer {
    connect: PgConnectOptions,
    connection: Option<PgConnection>,
    batch_size: usize,
    timeout: std::time::Duration,
}

/// Why a batch was not committed.
enum Failure {
    /// Worth one more try: a deadlock, serialization failure or lock
    /// timeout (same connection), or a lost connection (a new one).
    Transient(sqlx::Error),
    Permanent(sqlx::Error),
    TimedOut,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut batch: Vec<Write> = Vec::with_capacity(self.batch_size);
        let mut carried: Option<Write> = None;
        let mut stop = None;
        while stop.is_none() {
            let first = match carried.take() {
                Some(write) => Command::Write(write),
                None => match commands.recv().await {
                    Some(command) => command,
                    None => break,
                },
            };
            let mut after = None;
            match first {
                Command::Write(write) => batch.push(write),
                other => after = Some(other),
            }
            while after.is_none() && carried.is_none() && batch.len() < self.batch_size {
                match commands.try_recv() {
                    Ok(Command::Write(write)) if conflicts(&batch, &write) => carried = Some(write),
                    Ok(Command::Write(write)) => batch.push(write),
                    Ok(other) => after = Some(other),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch).await;
            match after {
                Some(Command::Probe(reply)) => {
                    let _ = reply.send(self.probe().await);
                }
                Some(Command::Stop(done)) => stop = Some(done),
                _ => {}
            }
        }
        // What was taken but not yet written is written before stopping.
        if let Some(write) = carried.take() {
            batch.push(write);
            self.commit(&mut batch).await;
        }
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
        tracing::debug!("db: writer stopped");
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    /// The open connection, or a new one made within `deadline`.
    async fn connection(&mut self, deadline: Deadline) -> Result<&mut PgConnection, Failure> {
        if self.connection.is_none() {
            let connecting = async {
                let mut connection = PgConnection::connect_with(&self.connect).await?;
                // A 2xx must mean durable: never acknowledge before the WAL
                // is flushed, whatever the server's default.
                sqlx::query(
                    "select set_config('synchronous_commit', 'on', false)
                     where current_setting('synchronous_commit') = 'off'",
                )
                .execute(&mut connection)
                .await?;
                Ok::<_, sqlx::Error>(connection)
            };
            match tokio::time::timeout_at(deadline, connecting).await {
                Err(_) => return Err(Failure::TimedOut),
                Ok(Err(error)) => return Err(Failure::Permanent(error)),
                Ok(Ok(connection)) => {
                    tracing::debug!("db: writer connected");
                    self.connection = Some(connection);
                }
            }
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    async fn commit(&mut self, batch: &mut Vec<Write>) {
        // A delivery whose handler has stopped waiting was answered 503
        // already: storing it now would only hold up the others.
        let now = Deadline::now();
        batch.retain_mut(|write| {
            let expired = write.deadline <= now;
            if expired {
                let (reply, _) = oneshot::channel();
                let reply = std::mem::replace(&mut write.reply, reply);
                let _ = reply.send(Err(StoreError::Timeout(self.timeout)));
            }
            !expired
        });
        let Some(deadline) = batch.iter().map(|write| write.deadline).max() else {
            return;
        };
        let started = Instant::now();
        let mut result = self.try_commit(batch, deadline).await;
        if let Err(Failure::Transient(error)) = &result {
            tracing::warn!(size = batch.len(), error = %cause(error), "batch rolled back; retrying it once");
            result = self.try_commit(batch, deadline).await;
        }
        match result {
            Ok(outcomes) => {
                let elapsed = started.elapsed();
                tracing::debug!(size = batch.len(), ?elapsed, "batch committed");
                monitoring::batch_committed(batch.len(), elapsed.as_secs_f64());
                for (write, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = write.reply.send(Ok(outcome));
                }
            }
            Err(failure) => {
                let error = match failure {
                    Failure::TimedOut => StoreError::Timeout(self.timeout),
                    Failure::Transient(error) | Failure::Permanent(error) => {
                        StoreError::Database(cause(&error))
                    }
                };
                tracing::error!(size = batch.len(), error = %error, "batch rolled back");
                monitoring::database_error();
                for write in batch.drain(..) {
                    let _ = write.reply.send(Err(error.clone()));
                }
            }
        }
    }

    async fn try_commit(
        &mut self,
        batch: &[Write],
        deadline: Deadline,
    ) -> Result<Vec<Recorded>, Failure> {
        let connection = self.connection(deadline).await?;
        let result = match tokio::time::timeout_at(deadline, apply(connection, batch)).await {
            Ok(result) => result,
            Err(_) => {
                // Where the transaction stands is unknown: drop the
                // connection, which rolls back whatever did not commit.
                self.connection = None;
                return Err(Failure::TimedOut);
            }
        };
        result.map_err(|error| {
            if connection_lost(&error) {
                self.connection = None;
                Failure::Transient(error)
            } else if retryable(&error) {
                Failure::Transient(error)
            } else {
                Failure::Permanent(error)
            }
        })
    }

    /// The readiness probe's write, in a transaction of its own.
    async fn probe(&mut self) -> Result<(), StoreError> {
        let deadline = Deadline::now() + self.timeout;
        let now = time::OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let connection = match self.connection(deadline).await {
            Ok(connection) => connection,
            Err(Failure::TimedOut) => return Err(StoreError::Timeout(self.timeout)),
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                return Err(StoreError::Database(cause(&error)));
            }
        };
        let write = sqlx::query(
            "insert into writer_probe (id, written_at) values (1, $1)
             on conflict (id) do update set written_at = excluded.written_at",
        )
        .bind(now)
        .execute(connection);
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                if connection_lost(&error) {
                    self.connection = None;
                }
                Err(StoreError::Database(cause(&error)))
            }
            Err(_) => {
                self.connection = None;
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }
}

/// Whether `write` must wait for the next batch: it shares an event id or
/// a job with a delivery already in `batch`. Batches are small; a scan is
/// cheaper than hashing.
fn conflicts(batch: &[Write], write: &Write) -> bool {
    let envelope = &write.delivery.envelope;
    let job = job_of(&write.delivery);
    batch.iter().any(|other| {
        other.delivery.envelope.event_id == envelope.event_id
            || (job.is_some() && job_of(&other.delivery) == job)
    })
}

fn job_of(delivery: &Delivery) -> Option<(&str, &str)> {
    match &delivery.envelope.meaning {
        Meaning::Outcome(job) => Some((job.patient_note_id.as_str(), job.job_id.as_str())),
        _ => None,
    }
}

/// Server errors worth one more try on the same connection.
fn retryable(error: &sqlx::Error) -> bool {
    let Some(code) = error.as_database_error().and_then(|e| e.code()) else {
        return false;
    };
    // deadlock, serialization failure, lock not available
    matches!(code.as_ref(), "40P01" | "40001" | "55P03")
}

/// Whether the connection is gone (network, server restart or shutdown).
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // connection exception; admin, crash or cannot-connect-now shutdown
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

const INSERT_EVENTS: &str = r#"
with input as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[])
        as t(event_id, event_type, job_id, patient_note_id, created,
             received_at, attempt, outcome, reject_reason, payload)
),
new_events as (
    insert into events (event_id, event_type, job_id, patient_note_id, created,
                        received_at, attempt, outcome, reject_reason)
    select event_id, event_type, job_id, patient_note_id, created,
           received_at, attempt, outcome, reject_reason
    from input
    order by event_id collate "C"
    on conflict (event_id) do nothing
    returning seq, event_id
),
kept as (
    insert into payloads (seq, payload)
    select new_events.seq, input.payload
    from new_events join input on input.event_id = new_events.event_id
)
select event_id from new_events
"#;

/// Replaces a job's state only with a higher-ranked one: created beats
/// failed, then the later `created`, then the greater event id (bytewise).
/// Rows it skips are locked all the same, so the relabelling that follows
/// needs no lock of its own. Returns the events it applied.
const UPSERT_JOBS: &str = concat!(
    r#"
insert into jobs (patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                  patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                  deciding_event_created, deciding_event_created_ns,
                  first_received_at, last_received_at)
select patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
       patient_mrn, location_id, access_token_reference_id, deciding_event_id,
       deciding_event_created, deciding_event_created_ns, received_at, received_at
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[],
            $13::text[])
    as t(patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
         patient_mrn, location_id, access_token_reference_id, deciding_event_id,
         deciding_event_created, deciding_event_created_ns, received_at)
order by patient_note_id collate "C", job_id collate "C"
"#,
    super::replace_if_outranked!(),
    r#"
returning deciding_event_id
"#
);

/// One batch in one transaction; outcomes in the batch's order.
async fn apply(
    connection: &mut PgConnection,
    batch: &[Write],
) -> Result<Vec<Recorded>, sqlx::Error> {
    let rows = batch
        .iter()
        .map(|write| EventRow::of(&write.delivery))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = connection.begin().await?;

    let inserted: Vec<String> = sqlx::query_scalar(INSERT_EVENTS)
        .bind(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.event_type).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.patient_note_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.created).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.received_at.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.attempt).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.reject_reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.payload).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
    let is_new: Vec<bool> = rows.iter().map(|r| inserted.contains(r.event_id)).collect();

    // The new outcome events' jobs: which of them now decide their job.
    let contenders: Vec<(&EventRow<'_>, &JobOutcome)> = rows
        .iter()
        .zip(&is_new)
        .filter(|(_, new)| **new)
        .filter_map(|(row, _)| row.job.map(|job| (row, job)))
        .collect();
    let mut superseded: HashSet<&str> = HashSet::new();
    if !contenders.is_empty() {
        let applied: Vec<String> = sqlx::query_scalar(UPSERT_JOBS)
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.patient_note_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.job_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.rank.status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.emr_note_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.failure_reason.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.reasons.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.patient_mrn.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.location_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.access_token_reference_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.rank.event_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.created.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(_, j)| j.rank.created_ns())
                    .collect::<Vec<_>>(),
            )
            .bind(
                contenders
                    .iter()
                    .map(|(r, _)| r.received_at.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
        let applied: HashSet<&str> = applied.iter().map(String::as_str).collect();
        let losers: Vec<&(&EventRow<'_>, &JobOutcome)> = contenders
            .iter()
            .filter(|(row, _)| !applied.contains(row.event_id))
            .collect();
        if !losers.is_empty() {
            // A superseded event changes nothing but its job's last-received time.
            sqlx::query("update events set outcome = 'superseded' where event_id = any($1)")
                .bind(losers.iter().map(|(r, _)| r.event_id).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "update jobs set last_received_at = t.received_at
                 from unnest($1::text[], $2::text[], $3::text[]) as t(patient_note_id, job_id, received_at)
                 where jobs.patient_note_id = t.patient_note_id and jobs.job_id = t.job_id",
            )
            .bind(losers.iter().map(|(_, j)| j.patient_note_id.as_str()).collect::<Vec<_>>())
            .bind(losers.iter().map(|(_, j)| j.job_id.as_str()).collect::<Vec<_>>())
            .bind(losers.iter().map(|(r, _)| r.received_at.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
            superseded.extend(losers.iter().map(|(r, _)| r.event_id));
        }
    }

    // Duplicates answer with the original's outcome. The insert above
    // waited for any transaction still writing an id, so this reads
    // committed originals only.
    let duplicates: Vec<&str> = rows
        .iter()
        .zip(&is_new)
        .filter(|(_, new)| !**new)
        .map(|(row, _)| row.event_id)
        .collect();
    let mut originals = std::collections::HashMap::new();
    if !duplicates.is_empty() {
        let found = sqlx::query("select event_id, outcome from events where event_id = any($1)")
            .bind(&duplicates)
            .fetch_all(&mut *tx)
            .await?;
        for row in found {
            originals.insert(
                row.try_get::<String, _>(0)?,
                super::outcome_column(&row, 1)?,
            );
        }
    }
    tx.commit().await?;

    rows.iter()
        .zip(is_new)
        .map(|(row, new)| {
            if new {
                Ok(Recorded::New(if superseded.contains(row.event_id) {
                    Outcome::Superseded
                } else {
                    row.outcome
                }))
            } else {
                originals
                    .get(row.event_id)
                    .copied()
                    .map(Recorded::Duplicate)
                    .ok_or_else(|| sqlx::Error::RowNotFound)
            }
        })
        .collect()
}

/// A delivery as its event-log row, before the job is decided.
struct EventRow<'a> {
    event_id: &'a str,
    event_type: Option<&'a str>,
    job_id: Option<&'a str>,
    patient_note_id: Option<&'a str>,
    created: Option<&'a str>,
    received_at: String,
    attempt: Option<i64>,
    /// `applied` for an outcome event until the upsert says otherwise.
    outcome: Outcome,
    reject_reason: Option<String>,
    payload: &'a str,
    job: Option<&'a JobOutcome>,
}

impl<'a> EventRow<'a> {
    fn of(delivery: &'a Delivery) -> Result<Self, sqlx::Error> {
        let envelope = &delivery.envelope;
        let (outcome, reject_reason, job) = match &envelope.meaning {
            Meaning::Outcome(job) => (Outcome::Applied, None, Some(&**job)),
            Meaning::Other => (Outcome::Ignored, None, None),
            Meaning::Invalid(error) => (Outcome::Rejected, Some(error.to_string()), None),
        };
        Ok(Self {
            event_id: &envelope.event_id,
            event_type: envelope.event_type.as_deref(),
            job_id: envelope.job_id.as_deref(),
            patient_note_id: envelope.patient_note_id.as_deref(),
            created: envelope.created.as_deref(),
            received_at: delivery
                .received_at
                .format(&Rfc3339)
                .map_err(|e| sqlx::Error::Encode(e.into()))?,
            attempt: delivery.attempt,
            outcome,
            reject_reason,
            payload: &delivery.payload,
            job,
        })
    }
}

/// How far one purge transaction got.
pub(super) struct Sweep {
    /// Events the sweep passed, all received before the cutoff.
    pub swept: u64,
    /// Of those, payloads deleted now.
    pub purged: usize,
}

/// Sweeps the event log in arrival order from where the last sweep stopped,
/// deleting the payloads of up to `limit` events received before `cutoff`
/// (RFC 3339). It stops at the first event still within retention. When
/// another replica holds the sweep position, it does nothing: that replica
/// is doing the same work.
pub(super) async fn purge_payloads(
    pool: &PgPool,
    cutoff: &str,
    limit: i64,
) -> Result<Sweep, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let from: Option<i64> = sqlx::query_scalar(
        "select swept_through_seq from payload_purge where id = 1 for update skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(from) = from else {
        return Ok(Sweep {
            swept: 0,
            purged: 0,
        });
    };
    let events: Vec<(i64, bool)> = sqlx::query_as(
        "select seq, received_at < $1 from events where seq > $2 order by seq limit $3",
    )
    .bind(cutoff)
    .bind(from)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let expired: Vec<i64> = events
        .iter()
        .take_while(|(_, expired)| *expired)
        .map(|(seq, _)| *seq)
        .collect();
    let through = expired.last().copied().unwrap_or(from);
    let purged = sqlx::query("delete from payloads where seq > $1 and seq <= $2")
        .bind(from)
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("update payload_purge set swept_through_seq = $1 where id = 1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Sweep {
        swept: expired.len() as u64,
        purged: purged as usize,
    })
}
