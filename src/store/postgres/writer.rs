//! This replica's writer: group commit behind durable acknowledgements,
//! safe beside other replicas writing the same database.
//!
//! Deliveries queue in a bounded channel. The writer task takes all that
//! are waiting (up to the batch size) and writes them with one statement
//! over the connection it owns ([`RECORD_BATCH`]), which PostgreSQL commits
//! on its own, whole or not at all; then it answers each delivery. One
//! round trip and one WAL flush a batch, repeated deliveries and superseded
//! events included:
//!
//! - The new outcome events' jobs are upserted (multi-row, over `unnest`
//!   arrays, sorted by key), replacing a job's state only where the event
//!   outranks the deciding one: the comparison runs on the locked, latest
//!   row, so it holds whichever replica each event lands on.
//! - The events go into the log (sorted by event id), labelled from that,
//!   skipping ids already there. An id another replica is inserting right
//!   now makes the insert wait for that commit, so a `duplicate` is only
//!   answered once the original is committed.
//!
//! Every statement takes job keys, then event ids, each in sorted order,
//! so two replicas' batches cannot deadlock. A batch never holds two events
//! of one job (the second starts the next batch), which keeps each upsert
//! to one row per key and the labels equal to those of the SQLite engine,
//! which applies deliveries one by one. A second delivery of one event in
//! a batch is answered as the first one's duplicate.
//!
//! A deadlock, serialization failure, lock timeout or lost connection is
//! retried once (on a new connection if the old one is gone); then every
//! delivery of the batch gets the error, and nothing of it is visible.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{Connection, Row};
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as Deadline;

use super::cause;
use super::reachability::Reachability;
use crate::domain::{JobOutcome, Meaning};
use crate::monitoring;
use crate::store::sealing::Kept;
use crate::store::write_trace::WriteTrace;
use crate::store::{
    Chunk, Delivery, FirstOutcome, Outcome, Recorded, Source, StoreError, StoreOptions, Wakeups,
    WriteHealth,
};

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
    /// Its payload and MRN as they are stored.
    pub kept: Kept,
    pub reply: oneshot::Sender<Result<Recorded, StoreError>>,
    /// Its spans in the writer, when traces are on.
    pub trace: WriteTrace,
    /// When the delivery's handler stops waiting for this write.
    pub deadline: Deadline,
}

/// Starts the writer task; it connects when the first write arrives.
pub(super) fn start(
    connect: PgConnectOptions,
    options: &StoreOptions,
    signals: Signals,
    notifier: super::notify::Notifier,
) -> mpsc::Sender<Command> {
    let (sender, receiver) = mpsc::channel(options.write_queue_capacity);
    let writer = Writer {
        connect,
        connection: None,
        batch_size: options.write_batch_size.max(1),
        timeout: options.write_timeout,
        wakeups: signals.wakeups,
        health: signals.health,
        reachability: signals.reachability,
        pool: signals.pool,
        relay: signals.relay,
        notifier,
    };
    tokio::spawn(writer.run(receiver));
    sender
}

struct Writer {
    connect: PgConnectOptions,
    connection: Option<PgConnection>,
    batch_size: usize,
    timeout: std::time::Duration,
    /// Waiters for outcomes on this replica, and the other replicas'.
    wakeups: Arc<Wakeups>,
    /// Readiness hears how each batch ended.
    health: Arc<WriteHealth>,
    /// Whether the database can be reached: while it cannot, the writer
    /// does not try to connect (the one probe does, over `pool`).
    reachability: Arc<Reachability>,
    pool: PgPool,
    relay: Arc<tokio::sync::Notify>,
    notifier: super::notify::Notifier,
}

/// Who the writer tells how batches end and whether the database answers.
pub(super) struct Signals {
    pub wakeups: Arc<Wakeups>,
    pub health: Arc<WriteHealth>,
    pub reachability: Arc<Reachability>,
    pub pool: PgPool,
    /// The change feed's relay, kicked after a batch decides a job.
    pub relay: Arc<tokio::sync::Notify>,
}

/// Why a batch was not committed.
enum Failure {
    /// Worth one more try: a deadlock, serialization failure or lock
    /// timeout (same connection), or a lost connection (a new one).
    Transient(sqlx::Error),
    Permanent(sqlx::Error),
    TimedOut,
    /// The database is known to be unreachable: not tried.
    Unreachable,
}

/// Adds a write to the batch: its wait in the queue is over.
fn take(batch: &mut Vec<Write>, mut write: Write) {
    write.trace.taken();
    batch.push(write);
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
                Command::Write(write) => take(&mut batch, write),
                other => after = Some(other),
            }
            while after.is_none() && carried.is_none() && batch.len() < self.batch_size {
                match commands.try_recv() {
                    Ok(Command::Write(write)) if conflicts(&batch, &write) => carried = Some(write),
                    Ok(Command::Write(write)) => take(&mut batch, write),
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
            take(&mut batch, write);
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
            if self.reachability.is_down() {
                return Err(Failure::Unreachable);
            }
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
                Ok(Err(error)) => {
                    self.reachability.note(&error, &self.pool);
                    return Err(Failure::Permanent(error));
                }
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
                self.health.committed();
                let decided: Vec<&str> = batch
                    .iter()
                    .zip(&outcomes)
                    .filter_map(
                        |(write, outcome)| match (job_of(&write.delivery), outcome) {
                            (Some((_, job_id)), Ok(Recorded::New(Outcome::Applied))) => {
                                Some(job_id)
                            }
                            _ => None,
                        },
                    )
                    .collect();
                if !decided.is_empty() {
                    self.relay.notify_one();
                    self.wakeups.wake(decided.iter().copied());
                    self.notifier.decided(&decided);
                }
                for (write, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = write.reply.send(outcome);
                }
            }
            Err(failure) => {
                let error = match failure {
                    Failure::TimedOut => StoreError::Timeout(self.timeout),
                    Failure::Unreachable => StoreError::Unreachable,
                    Failure::Transient(error) | Failure::Permanent(error) => {
                        StoreError::Database(cause(&error))
                    }
                };
                tracing::error!(size = batch.len(), error = %error, "batch rolled back");
                monitoring::database_error();
                self.health.failed();
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
    ) -> Result<Vec<Answer>, Failure> {
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
                // One lost connection is no outage (a backend killed, a
                // failover): the retry's new connection finds out.
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
            Err(Failure::Unreachable) => return Err(StoreError::Unreachable),
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                return Err(StoreError::Database(cause(&error)));
            }
        };
        let write = async {
            // What a delivery writes (an event row, a 64 KiB payload), in a
            // transaction rolled back: a disk too full for new pages, or a
            // rule refusing events, fails this as it fails deliveries.
            let mut tx = connection.begin().await?;
            let seq: i64 = sqlx::query_scalar(
                "insert into events (event_id, received_at, outcome)
                 values ('(readiness probe ' || pg_backend_pid() || ')', $1, 'ignored')
                 returning seq",
            )
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            // Text that does not compress, so it takes its pages.
            sqlx::query(
                "insert into payloads (seq, payload)
                 select $1, string_agg(md5(n::text), '') from generate_series(1, 2048) n",
            )
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            tx.rollback().await?;
            sqlx::query(
                "insert into writer_probe (id, written_at) values (1, $1)
                 on conflict (id) do update set written_at = excluded.written_at",
            )
            .bind(now)
            .execute(&mut *connection)
            .await
        };
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

/// Whether `write` must wait for the next batch: another event of its job
/// is in `batch`. (A second delivery of the same event stays: it is that
/// event's duplicate.) Batches are small; a scan is cheaper than hashing.
fn conflicts(batch: &[Write], write: &Write) -> bool {
    let Some(job) = job_of(&write.delivery) else {
        return false;
    };
    let event_id = &write.delivery.envelope.event_id;
    batch.iter().any(|other| {
        job_of(&other.delivery) == Some(job) && other.delivery.envelope.event_id != *event_id
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

/// A whole batch in one statement, so one round trip for all of it:
///
/// 1. `known`: the batch's events already in the log when the statement
///    began; they are duplicates and take no part.
/// 2. `decided`: the new outcome events' jobs, upserted in key order; a job
///    takes an event's state only if the event outranks the one deciding
///    it, judged on the locked, latest row. It returns the events applied.
/// 3. `new_events`: the log, in event id order, labelled from `decided`,
///    which runs to its end before the first event is inserted (the label
///    of every row, the first too, reads its result), so every statement
///    locks job keys first, then event ids: two replicas cannot deadlock.
///    An id another replica is inserting right now makes the insert wait
///    for that commit, then skip the row (a duplicate the statement did not
///    know of).
/// 4. `resolved`: the expected jobs the batch decided are no longer pending;
///    `noted`: each decision is a change in the feed (see `feed`).
/// 5. `kept`: their payloads (none when `payload_storage` keeps none).
/// 6. `repeated`: each webhook delivery of an event already in the log
///    (known, or inserted by another replica meanwhile) and the batch's own
///    later deliveries of an id (`$20`-`$22`), for the job's story.
/// 7. `touched`: a superseded event's job takes its last-received time.
///    `decided` left that row as it was (a batch holds one event a job), so
///    no row is changed twice in the statement.
///
/// Returns, in the batch's order, each event's label if it was inserted
/// now, or the original's if it was known, and whether its job was
/// touched (a row another replica inserted after the statement began is
/// not visible to `touched`), and a registered job's submission time and
/// account when the batch gave it its first outcome (`resolved`).
const RECORD_BATCH: &str = concat!(
    r#"
with input as (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::text[], $17::text[], $18::int8[], $19::text[], $23::text[],
                         $24::text[], $25::bytea[], $26::int8[])
        with ordinality
        as t(event_id, event_type, job_id, patient_note_id, created,
             received_at, attempt, label, reject_reason, payload,
             status, emr_note_id, failure_reason, reasons, patient_mrn,
             location_id, access_token_reference_id, created_ns, source, payload_key,
             patient_mrn_key, sealed, received_ns, arrival)
),
known as (
    select event_id, outcome from events where event_id = any($1::text[])
),
decided as (
"#,
    crate::store::sql::insert_job!(),
    r#"
    select patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
           patient_mrn, location_id, access_token_reference_id, event_id,
           created, created_ns, received_at, received_at, patient_mrn_key
    from input
    where status is not null and event_id not in (select event_id from known)
    order by patient_note_id collate "C", job_id collate "C"
"#,
    crate::store::sql::replace_if_outranked!(),
    r#"
    returning deciding_event_id, job_id, patient_note_id, status
),
resolved as (
    update expected_jobs set resolved = true
    from decided
    where expected_jobs.job_id = decided.job_id and not expected_jobs.resolved
    returning expected_jobs.job_id, expected_jobs.submitted_ns,
              expected_jobs.access_token_reference_id
),
noted as (
    insert into changes (job_id, patient_note_id, kind, at_ns)
    select decided.job_id, decided.patient_note_id, decided.status, input.received_ns
    from decided join input on input.event_id = decided.deciding_event_id
    -- Once `resolved` holds its rows: an overdue change of one of these
    -- jobs then either committed first (a smaller seq) or is not made.
    where (select count(*) from resolved) >= 0
),
new_events as (
    insert into events (event_id, event_type, job_id, patient_note_id, created,
                        received_at, attempt, outcome, reject_reason, source)
    select event_id, event_type, job_id, patient_note_id, created, received_at, attempt,
           -- The first test reads `decided` for every row, the first too.
           case when event_id = any(applied.ids) then 'applied'
                when status is null then label
                else 'superseded' end,
           reject_reason, source
    from input, (select array(select deciding_event_id from decided) as ids) as applied
    where event_id not in (select event_id from known)
    order by event_id collate "C"
    on conflict (event_id) do nothing
    returning seq, event_id, outcome
),
kept as (
    insert into payloads (seq, payload, payload_key, sealed)
    select new_events.seq, input.payload, input.payload_key, input.sealed
    from new_events join input on input.event_id = new_events.event_id
    where input.payload <> '' or input.sealed is not null
),
repeated as (
    insert into repeated_deliveries (event_id, received_at, attempt)
    select event_id, received_at, attempt from input
    where source = 'webhook' and event_id not in (select event_id from new_events)
    union all
    select * from unnest($20::text[], $21::text[], $22::int8[])
),
touched as (
    update jobs set last_received_at = input.received_at
    from new_events join input on input.event_id = new_events.event_id
    where new_events.outcome = 'superseded'
      and jobs.patient_note_id = input.patient_note_id and jobs.job_id = input.job_id
    returning jobs.patient_note_id, jobs.job_id
)
select new_events.outcome, known.outcome, touched.job_id is not null,
       resolved.submitted_ns, resolved.access_token_reference_id
from input
left join new_events on new_events.event_id = input.event_id
left join known on known.event_id = input.event_id
left join resolved on resolved.job_id = input.job_id and new_events.outcome = 'applied'
left join touched on touched.patient_note_id = input.patient_note_id
    and touched.job_id = input.job_id and new_events.outcome = 'superseded'
order by input.arrival
"#
);

/// A row of [`RECORD_BATCH`]: the event's label if it was inserted now,
/// the original's if it was known, whether its job was touched, and, for a
/// registered job's first outcome, when it was submitted and under which
/// account.
type BatchAnswer = (
    Option<String>,
    Option<String>,
    bool,
    Option<i64>,
    Option<String>,
);

/// One batch in one statement; outcomes in the batch's order. A later
/// delivery of an event id earlier in the batch is that event's duplicate,
/// answered, like the others, once the statement commits.
async fn apply(connection: &mut PgConnection, batch: &[Write]) -> Result<Vec<Answer>, sqlx::Error> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut unique: Vec<&Write> = Vec::with_capacity(batch.len());
    let slots: Vec<Result<usize, usize>> = batch
        .iter()
        .map(
            |write| match position.entry(&write.delivery.envelope.event_id) {
                Entry::Occupied(first) => Err(*first.get()),
                Entry::Vacant(slot) => {
                    slot.insert(unique.len());
                    unique.push(write);
                    Ok(unique.len() - 1)
                }
            },
        )
        .collect();
    // Later webhook deliveries of an event earlier in the batch are noted
    // as repeats by the batch's statement.
    let repeats: Vec<&Delivery> = batch
        .iter()
        .zip(&slots)
        .filter(|(write, slot)| slot.is_err() && write.delivery.source == Source::Webhook)
        .map(|(write, _)| &write.delivery)
        .collect();
    let recorded = apply_unique(connection, &unique, &repeats).await?;
    let recorded: Vec<Answer> = slots
        .into_iter()
        .map(|slot| match slot {
            Ok(own) => recorded[own].clone(),
            Err(first) => match &recorded[first] {
                Ok(Recorded::New(outcome) | Recorded::Duplicate(outcome)) => {
                    Ok(Recorded::Duplicate(*outcome))
                }
                Err(error) => Err(error.clone()),
            },
        })
        .collect();
    Ok(recorded)
}

/// Deliveries of distinct event ids (and at most one event a job), and the
/// batch's later deliveries of the same ids (`repeats`), in one statement
/// ([`RECORD_BATCH`]). Two rare cases take a second statement after it has
/// committed; neither writes anything a delivery's answer depends on: the
/// original's outcome for a duplicate another replica committed while the
/// batch ran (read), and the last-received time of a superseded event's
/// job that another replica created while it ran (the statement cannot see
/// that row to touch it).
async fn apply_unique(
    connection: &mut PgConnection,
    deliveries: &[&Write],
    repeats: &[&Delivery],
) -> Result<Vec<Answer>, sqlx::Error> {
    let rows = deliveries
        .iter()
        .map(|write| EventRow::of(&write.delivery, &write.kept))
        .collect::<Result<Vec<_>, _>>()?;
    let repeated_at = repeats
        .iter()
        .map(|delivery| delivery.received_at.format(&Rfc3339))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    let answers: Vec<BatchAnswer> = sqlx::query_as(RECORD_BATCH)
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
        .bind(rows.iter().map(|r| r.label).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.reject_reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.payload).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.job.map(|j| j.rank.status.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.and_then(|j| j.emr_note_id.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.and_then(|j| j.failure_reason.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.and_then(|j| j.reasons.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.mrn.map(|mrn| mrn.text.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.and_then(|j| j.location_id.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.and_then(|j| j.access_token_reference_id.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.job.map(|j| j.rank.created_ns()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.source).collect::<Vec<_>>())
        .bind(
            repeats
                .iter()
                .map(|d| d.envelope.event_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(repeated_at)
        .bind(repeats.iter().map(|d| d.attempt).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.payload_key).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.mrn.and_then(|mrn| mrn.key_id.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.sealed).collect::<Vec<_>>())
        .bind(
            deliveries
                .iter()
                .map(|write| crate::clock::unix_ns(write.delivery.received_at))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *connection)
        .await?;

    // The statement has committed.
    for (row, (_, _, _, submitted_ns, account)) in rows.iter().zip(&answers) {
        if let (Some(job), Some(submitted_ns)) = (row.job, submitted_ns) {
            FirstOutcome {
                status: job.rank.status,
                account: account.clone(),
                submitted_ns: *submitted_ns,
                outcome_ns: job.rank.created_ns(),
            }
            .count();
        }
    }
    let mut recorded = Vec::with_capacity(rows.len());
    let mut superseded = Vec::new();
    let mut unknown = Vec::new();
    for (row, (label, original, touched, _, _)) in rows.iter().zip(&answers) {
        recorded.push(match (label, original) {
            (Some(label), _) => {
                let outcome = parse_outcome(label)?;
                if outcome == Outcome::Superseded && !touched {
                    superseded.push(row);
                }
                Some(Recorded::New(outcome))
            }
            (None, Some(original)) => Some(Recorded::Duplicate(parse_outcome(original)?)),
            (None, None) => {
                unknown.push(row.event_id);
                None
            }
        });
    }
    if !superseded.is_empty() {
        // A superseded event changes nothing but its job's last-received
        // time; the batch is committed, so a failure here costs only that.
        let touch = sqlx::query(
            "update jobs set last_received_at = t.received_at
             from unnest($1::text[], $2::text[], $3::text[]) as t(patient_note_id, job_id, received_at)
             where jobs.patient_note_id = t.patient_note_id and jobs.job_id = t.job_id",
        )
        .bind(superseded.iter().map(|r| r.patient_note_id).collect::<Vec<_>>())
        .bind(superseded.iter().map(|r| r.job_id).collect::<Vec<_>>())
        .bind(superseded.iter().map(|r| r.received_at.as_str()).collect::<Vec<_>>())
        .execute(&mut *connection)
        .await;
        if let Err(error) = touch {
            tracing::warn!(error = %cause(&error), "a superseded event's job keeps its last-received time");
        }
    }
    // The batch is committed: a failed read of the originals is the answer
    // of those duplicates only (their retry finds them again).
    let originals = match unknown.is_empty() {
        true => Ok(HashMap::new()),
        false => originals(connection, &unknown)
            .await
            .map_err(|error| StoreError::Database(cause(&error))),
    };
    Ok(rows
        .iter()
        .zip(recorded)
        .map(|(row, recorded)| match recorded {
            Some(recorded) => Ok(recorded),
            None => match &originals {
                Ok(originals) => originals
                    .get(row.event_id)
                    .map(|outcome| Recorded::Duplicate(*outcome))
                    .ok_or_else(|| {
                        StoreError::Database("a duplicate's original was not found".into())
                    }),
                Err(error) => Err(error.clone()),
            },
        })
        .collect())
}

/// What became of events another replica committed while a batch ran.
async fn originals(
    connection: &mut PgConnection,
    event_ids: &[&str],
) -> Result<HashMap<String, Outcome>, sqlx::Error> {
    let found = sqlx::query("select event_id, outcome from events where event_id = any($1)")
        .bind(event_ids)
        .fetch_all(&mut *connection)
        .await?;
    found
        .iter()
        .map(|row| Ok((row.try_get::<String, _>(0)?, super::outcome_column(row, 1)?)))
        .collect()
}

/// A delivery's answer: how it was recorded, or why it was not.
type Answer = Result<Recorded, StoreError>;

fn parse_outcome(value: &str) -> Result<Outcome, sqlx::Error> {
    Outcome::parse(value)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown outcome {value}").into()))
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
    /// The label of an event that decides no job (`ignored`, `rejected`);
    /// an outcome event's is decided in the database.
    label: Option<&'static str>,
    reject_reason: Option<String>,
    payload: &'a str,
    payload_key: Option<&'a str>,
    sealed: Option<&'a [u8]>,
    job: Option<&'a JobOutcome>,
    mrn: Option<&'a crate::sealing::Kept>,
    source: &'static str,
}

impl<'a> EventRow<'a> {
    fn of(delivery: &'a Delivery, kept: &'a Kept) -> Result<Self, sqlx::Error> {
        let envelope = &delivery.envelope;
        let (label, reject_reason, job) = match &envelope.meaning {
            Meaning::Outcome(job) => (None, None, Some(&**job)),
            Meaning::Other => (Some(Outcome::Ignored.as_str()), None, None),
            Meaning::Invalid(error) => (
                Some(Outcome::Rejected.as_str()),
                Some(error.to_string()),
                None,
            ),
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
            label,
            reject_reason,
            payload: kept.payload.text(),
            payload_key: kept.payload.key_id(),
            sealed: kept.payload.sealed(),
            job,
            mrn: kept.mrn.as_ref(),
            source: delivery.source.as_str(),
        })
    }
}

/// Sweeps the event log in arrival order from where the last sweep stopped,
/// deleting the payloads of up to `limit` events received before `cutoff`
/// (RFC 3339). It stops at the first event still within retention. When
/// another replica holds the sweep position, it does nothing: that replica
/// is doing the same work.
pub(super) async fn purge_payloads(
    pool: &PgPool,
    cutoff: &str,
    limit: u64,
) -> Result<Chunk, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let from: Option<i64> = sqlx::query_scalar(
        "select swept_through_seq from payload_purge where id = 1 for update skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(from) = from else {
        return Ok(Chunk {
            passed: 0,
            changed: 0,
        });
    };
    let events: Vec<(i64, bool)> = sqlx::query_as(
        "select seq, received_at < $1 from events where seq > $2 order by seq limit $3",
    )
    .bind(cutoff)
    .bind(from)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
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
    Ok(Chunk {
        passed: expired.len() as u64,
        changed: purged,
    })
}
