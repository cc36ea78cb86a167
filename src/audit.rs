//! The audit trail: who looked at which job or note, who searched,
//! exported, revealed an MRN or ran recovery, and when.
//!
//! Rows are written by one task in batches (one transaction for whatever
//! is waiting), so a burst of reads costs a few commits, not one each.
//! Two ways to record:
//!
//! - [`Audit::record`] queues the row and returns at once: page views and
//!   status reads answer without waiting for a commit, and go on answering
//!   when the database cannot take writes (the rows wait in memory and are
//!   retried; past [`QUEUE`] rows, new ones are dropped and counted in
//!   `cobalt_receiver_audit_rows_total{outcome="dropped"}`, with an error
//!   logged).
//! - [`Audit::record_committed`] waits for the row's commit: what shows
//!   patient data (an MRN reveal) is refused unless its row is on disk.
//!
//! Rows are deleted after `audit_retention_days`.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::monitoring::{self, AuditRows};
use crate::store::{AuditEntry, Store, StoreError};

/// Rows that may wait for the database before new ones are dropped.
const QUEUE: usize = 65_536;
/// Rows written per transaction, at most.
const BATCH: usize = 512;

enum Command {
    Row(AuditEntry, Option<oneshot::Sender<Result<(), StoreError>>>),
    /// Write what is queued before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// A handle on the audit writer; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    commands: mpsc::Sender<Command>,
}

/// Who did what to which target, for [`Audit::record`].
pub struct Action<'a> {
    pub actor: &'a str,
    pub action: &'static str,
    pub target: String,
    pub request_id: Option<&'a str>,
}

impl Action<'_> {
    fn entry(self) -> AuditEntry {
        AuditEntry {
            at: OffsetDateTime::now_utc(),
            actor: self.actor.to_owned(),
            action: self.action.to_owned(),
            target: self.target,
            request_id: self.request_id.map(str::to_owned),
        }
    }
}

impl Audit {
    /// Starts the writer task; a batch not committed within
    /// `write_timeout` counts as failed.
    pub fn start(store: Store, write_timeout: Duration) -> Self {
        let (commands, queue) = mpsc::channel(QUEUE);
        tokio::spawn(write_rows(store, queue, write_timeout));
        Self { commands }
    }

    /// Queues a row; never waits.
    pub fn record(&self, action: Action<'_>) {
        let which = action.action;
        match self.commands.try_send(Command::Row(action.entry(), None)) {
            Ok(()) => {}
            Err(_) => {
                monitoring::audit_rows(AuditRows::Dropped, 1);
                tracing::error!(
                    action = which,
                    "audit: a row was dropped: the database has not taken writes for a while"
                );
            }
        }
    }

    /// Records a row and answers once it is committed.
    pub async fn record_committed(&self, action: Action<'_>) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.commands
            .send(Command::Row(action.entry(), Some(done)))
            .await
            .map_err(|_| StoreError::Stopped)?;
        committed.await.map_err(|_| StoreError::Stopped)?
    }

    /// Waits until the rows queued so far are written (or given up on at
    /// shutdown).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Writes queued rows in batches until every handle is dropped. A failed
/// batch is retried (with growing pauses) unless its rows had a waiter,
/// which is told of the failure instead.
async fn write_rows(store: Store, mut queue: mpsc::Receiver<Command>, write_timeout: Duration) {
    let mut rows: Vec<AuditEntry> = Vec::new();
    let mut waiters = Vec::new();
    let mut flushes = Vec::new();
    let mut pause = Duration::from_millis(100);
    loop {
        if rows.is_empty() && flushes.is_empty() {
            match queue.recv().await {
                Some(command) => take(command, &mut rows, &mut waiters, &mut flushes),
                None => return,
            }
        }
        while rows.len() < BATCH {
            match queue.try_recv() {
                Ok(command) => take(command, &mut rows, &mut waiters, &mut flushes),
                Err(_) => break,
            }
        }
        if rows.is_empty() {
            for flush in flushes.drain(..) {
                let _ = flush.send(());
            }
            continue;
        }
        let count = rows.len();
        // Each engine bounds a batch by the write timeout itself; this is
        // the last resort against a connection that hangs.
        let written = tokio::time::timeout(write_timeout * 3, store.append_audit(rows.clone()))
            .await
            .unwrap_or(Err(StoreError::Timeout(write_timeout)));
        match written {
            Ok(()) => {
                monitoring::audit_rows(AuditRows::Recorded, count);
                rows.clear();
                for (_, waiter) in waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
                pause = Duration::from_millis(100);
            }
            Err(StoreError::Stopped) => {
                monitoring::audit_rows(AuditRows::Dropped, count);
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error, rows = count, "audit: writing rows failed; retrying");
                // Rows someone waits for are answered, not retried: what
                // they would have shown is refused.
                for (index, waiter) in waiters.drain(..).rev() {
                    rows.remove(index);
                    let _ = waiter.send(Err(error.clone()));
                }
                // Flushes (shutdown) do not wait for a database that is down.
                if !flushes.is_empty() {
                    monitoring::audit_rows(AuditRows::Dropped, rows.len());
                    rows.clear();
                    continue;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn take(
    command: Command,
    rows: &mut Vec<AuditEntry>,
    waiters: &mut Vec<(usize, oneshot::Sender<Result<(), StoreError>>)>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match command {
        Command::Row(entry, waiter) => {
            if let Some(waiter) = waiter {
                waiters.push((rows.len(), waiter));
            }
            rows.push(entry);
        }
        Command::Flush(done) => flushes.push(done),
    }
}

/// Longest target kept, in bytes: a path and query, or a filter.
const MAX_TARGET: usize = 512;

/// `target` cut to [`MAX_TARGET`] bytes (at a character boundary).
pub fn bounded(target: &str) -> String {
    let mut end = target.len().min(MAX_TARGET);
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    target[..end].to_owned()
}

/// The target of a look-up that found nothing: what was typed could be
/// anything a user had at hand (an MRN included), so only its length.
pub fn unmatched(typed: &str) -> String {
    format!("(no match, {} characters)", typed.chars().count())
}

/// Deletes audit rows older than `retention` every `interval`, until the
/// store stops (a background task).
pub async fn purge_every(store: Store, retention: Duration, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let cutoff = OffsetDateTime::now_utc() - retention;
        match store.purge_audit(crate::clock::unix_ns(cutoff)).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted audit rows past their retention"),
            Err(StoreError::Stopped) => return,
            Err(error) => {
                tracing::warn!(error = %error, "purging audit rows failed; retrying later")
            }
        }
    }
}
