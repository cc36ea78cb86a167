//! The single writer: group commit behind durable acknowledgements.
//!
//! Deliveries queue in a bounded channel. The writer thread takes all that
//! are waiting (up to the batch size), applies them in order in one
//! transaction (with those that arrive meanwhile: see [`Arrivals`]),
//! commits, and only then replies to each. One fsync thus
//! covers a whole batch. Dedupe and ranking work inside a batch as across
//! batches, because each delivery's statements see the ones before it in
//! the same transaction. If any statement or the commit fails, the
//! transaction rolls back and every delivery of the batch gets the error.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{
    CachedStatement, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::{Checkpointer, WRITER_BACKSTOP_PAGES};
use super::{connect, decode_error, outcome_column};
use crate::domain::Meaning;
use crate::monitoring;
use crate::store::feed::FeedSignal;
use crate::store::sealing::Kept;
use crate::store::sql;
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
    /// Work of its own on the write connection (readiness probe, purge),
    /// run after the batch in hand; it sends its own reply.
    Task(Task),
    /// Finish what is queued before this, close the connection, then answer.
    Stop(oneshot::Sender<()>),
}

pub(super) type Task = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

pub(super) struct Write {
    pub delivery: Delivery,
    /// Its payload and MRN as they are stored.
    pub kept: Kept,
    pub reply: oneshot::Sender<Result<Recorded, StoreError>>,
    /// Its spans in the writer, when traces are on.
    pub trace: WriteTrace,
    /// When the delivery's handler stops waiting for this write.
    pub deadline: Instant,
}

/// Opens the write connection and starts the writer thread.
pub(super) fn start(
    path: &Path,
    options: &StoreOptions,
    wakeups: std::sync::Arc<Wakeups>,
    health: std::sync::Arc<WriteHealth>,
    feed: std::sync::Arc<FeedSignal>,
) -> anyhow::Result<mpsc::Sender<Command>> {
    let db = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        options,
    )?;
    let mode: String = db.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "the database refused WAL mode ({mode})"
    );
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)?;
    if options.max_database_bytes > 0 {
        let page_size: u64 = db.pragma_query_value(None, "page_size", |row| row.get(0))?;
        db.pragma_update(
            None,
            "max_page_count",
            (options.max_database_bytes / page_size).max(1),
        )?;
    }

    let checkpointer = Checkpointer::start(path, options)?;

    let (sender, receiver) = mpsc::channel(options.write_queue_capacity);
    let (batch_size, timeout) = (options.write_batch_size, options.write_timeout);
    std::thread::Builder::new()
        .name("db-writer".into())
        .spawn(move || {
            let signals = Signals {
                wakeups: &wakeups,
                health: &health,
                feed: &feed,
            };
            run(db, checkpointer, receiver, batch_size, timeout, signals)
        })?;
    Ok(sender)
}

fn run(
    mut db: rusqlite::Connection,
    checkpointer: Checkpointer,
    mut commands: mpsc::Receiver<Command>,
    batch_size: usize,
    timeout: Duration,
    signals: Signals<'_>,
) {
    let mut batch: Vec<Write> = Vec::with_capacity(batch_size);
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = commands.blocking_recv() else {
            break;
        };
        let mut task = None;
        match first {
            Command::Write(write) => take(&mut batch, write),
            Command::Task(work) => task = Some(work),
            Command::Stop(done) => stop = Some(done),
        }
        if task.is_none() {
            drain(&mut commands, &mut batch, batch_size, &mut stop, &mut task);
        }
        let mut arrivals = Arrivals {
            commands: &mut commands,
            batch_size,
            stop: &mut stop,
            task: &mut task,
            until: Instant::now() + GATHER_MAX,
        };
        let committed = commit_batch(&mut db, &mut batch, &mut arrivals, timeout, signals);
        if committed > 0 {
            checkpointer.committed(committed);
        }
        if let Some(work) = task {
            work(&mut db);
            checkpointer.committed(1);
        }
    }
    drop(checkpointer);
    drop(db);
    tracing::debug!("db: writer stopped");
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Adds a write to the batch: its wait in the queue is over.
fn take(batch: &mut Vec<Write>, mut write: Write) {
    write.trace.taken();
    batch.push(write);
}

/// Takes what else is waiting, up to the batch size, without waiting for
/// more: what arrives during a commit forms the next batch.
fn drain(
    commands: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<Write>,
    batch_size: usize,
    stop: &mut Option<oneshot::Sender<()>>,
    task: &mut Option<Task>,
) {
    while stop.is_none() && task.is_none() && batch.len() < batch_size {
        match commands.try_recv() {
            Ok(Command::Write(write)) => take(batch, write),
            Ok(Command::Task(work)) => *task = Some(work),
            Ok(Command::Stop(done)) => *stop = Some(done),
            Err(_) => break,
        }
    }
}

/// Longest a batch keeps taking deliveries that arrive while it is being
/// applied; see [`Arrivals`].
const GATHER_MAX: Duration = Duration::from_millis(1);

/// Deliveries that arrive while a batch is being applied join it, in the
/// same transaction, until none came in meanwhile, the batch is full or
/// [`GATHER_MAX`] has passed. Every commit rewrites the touched page of
/// each index and syncs, so under load a larger batch costs each delivery
/// much less. The writer never sleeps for them: it takes only what came in
/// while it applied the ones before, so a lone delivery is committed at
/// once and none waits more than [`GATHER_MAX`] longer.
struct Arrivals<'a> {
    commands: &'a mut mpsc::Receiver<Command>,
    batch_size: usize,
    stop: &'a mut Option<oneshot::Sender<()>>,
    task: &'a mut Option<Task>,
    until: Instant,
}

impl Arrivals<'_> {
    /// Adds to `batch` what has arrived; returns whether anything did.
    fn take(&mut self, batch: &mut Vec<Write>) -> bool {
        if batch.len() >= self.batch_size
            || self.stop.is_some()
            || self.task.is_some()
            || Instant::now() >= self.until
        {
            return false;
        }
        let before = batch.len();
        drain(self.commands, batch, self.batch_size, self.stop, self.task);
        batch.len() > before
    }
}

/// The readiness probe's write, in a transaction of its own.
pub(super) fn write_probe(db: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    let now = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(|e| decode_error(e.to_string()))?;
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Room for a large delivery, not just for rewriting a row in place.
    tx.prepare_cached(
        "insert into writer_probe (id, written_at, padding) values (2, ?, zeroblob(65536))",
    )?
    .execute([&now])?;
    tx.prepare_cached("delete from writer_probe where id = 2")?
        .execute([])?;
    tx.prepare_cached("insert or replace into writer_probe (id, written_at) values (1, ?)")?
        .execute([&now])?;
    tx.commit()
}

/// Who hears how each batch ended: clients waiting for an outcome, and
/// readiness.
#[derive(Clone, Copy)]
struct Signals<'a> {
    wakeups: &'a Wakeups,
    health: &'a WriteHealth,
    feed: &'a FeedSignal,
}

/// Applies and commits the batch, answers each delivery; returns how many
/// were committed.
fn commit_batch(
    db: &mut rusqlite::Connection,
    batch: &mut Vec<Write>,
    arrivals: &mut Arrivals<'_>,
    timeout: Duration,
    signals: Signals<'_>,
) -> usize {
    // A delivery whose handler has stopped waiting was answered 503 already:
    // storing it now would only hold up the others (the sender retries).
    let now = Instant::now();
    batch.retain_mut(|write| {
        let expired = write.deadline <= now;
        if expired {
            let (reply, _) = oneshot::channel();
            let reply = std::mem::replace(&mut write.reply, reply);
            let _ = reply.send(Err(StoreError::Timeout(timeout)));
        }
        !expired
    });
    if batch.is_empty() {
        return 0;
    }
    let started = Instant::now();
    match apply_batch(db, batch, arrivals) {
        Ok(outcomes) => {
            tracing::debug!(size = batch.len(), elapsed = ?started.elapsed(), "batch committed");
            monitoring::batch_committed(batch.len(), started.elapsed().as_secs_f64());
            signals.health.committed();
            {
                let mut decided = decided_jobs(batch, &outcomes).peekable();
                if decided.peek().is_some() {
                    signals.wakeups.wake(decided);
                    signals.feed.moved();
                }
            }
            let committed = batch.len();
            for (write, outcome) in batch.drain(..).zip(outcomes) {
                let _ = write.reply.send(Ok(outcome));
            }
            committed
        }
        Err(error) => {
            let error = StoreError::from(error);
            signals.health.failed();
            tracing::error!(size = batch.len(), error = %error, "batch rolled back");
            monitoring::database_error();
            for write in batch.drain(..) {
                let _ = write.reply.send(Err(error.clone()));
            }
            0
        }
    }
}

/// The job ids whose state the batch's applied events decided.
fn decided_jobs<'a>(batch: &'a [Write], outcomes: &'a [Recorded]) -> impl Iterator<Item = &'a str> {
    batch.iter().zip(outcomes).filter_map(|(write, outcome)| {
        match (&write.delivery.envelope.meaning, outcome) {
            (Meaning::Outcome(job), Recorded::New(Outcome::Applied)) => Some(job.job_id.as_str()),
            _ => None,
        }
    })
}

fn apply_batch(
    db: &mut rusqlite::Connection,
    batch: &mut Vec<Write>,
    arrivals: &mut Arrivals<'_>,
) -> rusqlite::Result<Vec<Recorded>> {
    // IMMEDIATE takes the write lock up front, so the reads below see the
    // state the writes will change. Dropping the transaction on an error
    // rolls it back.
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let first_outcomes = {
        let mut statements = Statements::prepare(&tx)?;
        loop {
            for write in &batch[outcomes.len()..] {
                outcomes.push(statements.apply(&write.delivery, &write.kept)?);
            }
            if !arrivals.take(batch) {
                break;
            }
        }
        statements.first_outcomes
    };
    tx.commit()?;
    for first in first_outcomes {
        first.count();
    }
    Ok(outcomes)
}

/// The statements a delivery runs, looked up in the statement cache once
/// per batch rather than once per use.
struct Statements<'tx> {
    db: &'tx rusqlite::Connection,
    insert_event: CachedStatement<'tx>,
    original_outcome: CachedStatement<'tx>,
    note_repeat: CachedStatement<'tx>,
    upsert_job: CachedStatement<'tx>,
    mark_superseded: CachedStatement<'tx>,
    touch_job: CachedStatement<'tx>,
    resolve_expected: CachedStatement<'tx>,
    insert_change: CachedStatement<'tx>,
    /// Registered jobs the batch gave their first outcome, counted once it
    /// commits.
    first_outcomes: Vec<FirstOutcome>,
}

impl<'tx> Statements<'tx> {
    fn prepare(tx: &'tx Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            db: tx,
            insert_event: tx.prepare_cached(
                "insert into events (event_id, event_type, job_id, patient_note_id, created,
                                     received_at, attempt, outcome, reject_reason, payload,
                                     source, payload_key, sealed_payload)
                 values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 on conflict (event_id) do nothing",
            )?,
            original_outcome: tx.prepare_cached("select outcome from events where event_id = ?")?,
            note_repeat: tx.prepare_cached(
                "insert into repeated_deliveries (event_id, received_at, attempt) values (?, ?, ?)",
            )?,
            // The ranking rule decides in the statement: a new job is
            // inserted, an outranked one replaced, and otherwise nothing
            // changes (no row counted).
            upsert_job: tx.prepare_cached(concat!(
                sql::insert_job!(),
                " values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)\n",
                sql::replace_if_outranked!()
            ))?,
            mark_superseded: tx
                .prepare_cached("update events set outcome = 'superseded' where seq = ?")?,
            // A superseded event changes nothing but the job's last-received time.
            touch_job: tx.prepare_cached(
                "update jobs set last_received_at = ? where patient_note_id = ? and job_id = ?",
            )?,
            resolve_expected: tx.prepare_cached(
                "update expected_jobs set resolved = 1 where job_id = ? and resolved = 0
                 returning submitted_ns, access_token_reference_id",
            )?,
            insert_change: tx.prepare_cached(super::feed::INSERT_CHANGE)?,
            first_outcomes: Vec::new(),
        })
    }

    /// One delivery: insert into the event log (the unique event id is the
    /// dedupe), then apply an outcome to its job under the ranking rule.
    /// An outcome is logged as applied and, when the job's deciding event
    /// outranks it, marked superseded in the same transaction: one
    /// statement fewer for the usual case than reading the rank first.
    fn apply(&mut self, delivery: &Delivery, kept: &Kept) -> rusqlite::Result<Recorded> {
        let envelope = &delivery.envelope;
        let received_at = delivery
            .received_at
            .format(&Rfc3339)
            .map_err(|e| decode_error(e.to_string()))?;
        let (outcome, reject_reason) = match &envelope.meaning {
            Meaning::Outcome(_) => (Outcome::Applied, None),
            Meaning::Other => (Outcome::Ignored, None),
            Meaning::Invalid(error) => (Outcome::Rejected, Some(error.to_string())),
        };

        let inserted = self.insert_event.execute(params![
            envelope.event_id,
            envelope.event_type,
            envelope.job_id,
            envelope.patient_note_id,
            envelope.created,
            received_at,
            delivery.attempt,
            outcome.as_str(),
            reject_reason,
            kept.payload.text(),
            delivery.source.as_str(),
            kept.payload.key_id(),
            kept.payload.sealed(),
        ])?;
        if inserted == 0 {
            let original: String = self
                .original_outcome
                .query_row([&envelope.event_id], |row| row.get(0))?;
            if delivery.source == Source::Webhook {
                self.note_repeat.execute(params![
                    envelope.event_id,
                    received_at,
                    delivery.attempt
                ])?;
            }
            return Ok(Recorded::Duplicate(outcome_column(&original)?));
        }
        let Meaning::Outcome(job) = &envelope.meaning else {
            return Ok(Recorded::New(outcome));
        };
        let event_seq = self.db.last_insert_rowid();
        let changed = self.upsert_job.execute(params![
            job.patient_note_id,
            job.job_id,
            job.rank.status.as_str(),
            job.emr_note_id,
            job.failure_reason,
            job.reasons,
            kept.mrn.as_ref().map(|mrn| &mrn.text),
            job.location_id,
            job.access_token_reference_id,
            job.rank.event_id,
            job.created,
            job.rank.created_ns(),
            received_at,
            kept.mrn.as_ref().and_then(|mrn| mrn.key_id.as_deref()),
        ])?;
        if changed == 1 {
            let registered = self
                .resolve_expected
                .query_row([&job.job_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if let Some((submitted_ns, account)) = registered {
                self.first_outcomes.push(FirstOutcome {
                    status: job.rank.status,
                    account,
                    submitted_ns,
                    outcome_ns: job.rank.created_ns(),
                });
            }
            self.insert_change.execute(params![
                job.job_id,
                job.patient_note_id,
                job.rank.status.change_kind().as_str(),
                crate::clock::unix_ns(delivery.received_at),
            ])?;
            return Ok(Recorded::New(Outcome::Applied));
        }
        // A superseded event changes nothing but the job's last-received time.
        self.mark_superseded.execute([event_seq])?;
        self.touch_job
            .execute(params![received_at, job.patient_note_id, job.job_id])?;
        Ok(Recorded::New(Outcome::Superseded))
    }
}

/// Sweeps the event log in arrival order from where the last sweep stopped,
/// emptying the payloads of up to `limit` events received before `cutoff`
/// (RFC 3339), in one short transaction. It stops at the first event still
/// within retention, so a payload is never emptied early. The rest of each
/// event stays.
pub(super) fn purge_payloads(
    db: &mut rusqlite::Connection,
    cutoff: &str,
    limit: u64,
) -> rusqlite::Result<Chunk> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from: i64 = tx
        .prepare_cached("select swept_through_seq from payload_purge where id = 1")?
        .query_row([], |row| row.get(0))?;
    let (mut through, mut swept) = (from, 0);
    {
        let mut next = tx.prepare_cached(
            "select seq, received_at < ? from events where seq > ? order by seq limit ?",
        )?;
        let mut rows = next.query(params![
            cutoff,
            from,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
        while let Some(row) = rows.next()? {
            if !row.get::<_, bool>(1)? {
                break;
            }
            through = row.get(0)?;
            swept += 1;
        }
    }
    let purged = tx
        .prepare_cached(
            "update events set payload = '', sealed_payload = null, payload_key = null
             where seq > ? and seq <= ? and (payload <> '' or sealed_payload is not null)",
        )?
        .execute(params![from, through])?;
    tx.prepare_cached("update payload_purge set swept_through_seq = ? where id = 1")?
        .execute([through])?;
    tx.commit()?;
    Ok(Chunk {
        passed: swept,
        changed: purged as u64,
    })
}
