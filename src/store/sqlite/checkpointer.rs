//! Checkpoints on a thread of their own.
//!
//! A checkpoint copies what the WAL holds back into the database file and
//! syncs it. Left to SQLite's autocheckpoint, the writer runs one inside a
//! commit every thousand pages (every few hundred events under load), and
//! the deliveries of that batch and of the next wait the few milliseconds
//! it takes: that was most of the intake's p99. Here a thread with a
//! connection of its own runs them instead, `PASSIVE`, which never blocks
//! the writer or a reader. Durability is unchanged: every commit is synced
//! by the writer as before, and a checkpoint syncs the WAL before copying
//! from it and the database file after.
//!
//! The WAL starts again from its beginning only when the writer begins a
//! transaction with all of it copied. Under load the writer is mostly in a
//! transaction when this thread finishes, so the WAL grows until the
//! writer's own checkpoint at [`WRITER_BACKSTOP_PAGES`] (about 40 MB),
//! which then has little left to copy, and the file is reused from there.
//! The same backstop covers this thread falling behind or failing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;

use super::connect;
use crate::store::StoreOptions;

/// A checkpoint is due after about a thousand WAL pages, SQLite's default
/// autocheckpoint. The pages are not counted here but estimated: a commit
/// rewrites about a dozen pages (one of each B-tree it touches), and under
/// load, when batches are large, a delivery adds two or three. So it is
/// due after so many commits or so many deliveries, whichever comes first.
const CHECKPOINT_AFTER_COMMITS: usize = 80;
const CHECKPOINT_AFTER_WRITES: usize = 400;

/// Longest a write waits for its checkpoint when few come in.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// WAL size, in pages, at which the writer checkpoints in its own commit.
pub(super) const WRITER_BACKSTOP_PAGES: u32 = 10_000;

/// The writer's handle on the checkpoint thread.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// Commits since the last checkpoint began, and the writes they held.
    commits: AtomicUsize,
    writes: AtomicUsize,
    stopping: AtomicBool,
}

fn due(commits: usize, writes: usize) -> bool {
    commits >= CHECKPOINT_AFTER_COMMITS || writes >= CHECKPOINT_AFTER_WRITES
}

impl Checkpointer {
    /// Opens the checkpoint connection and starts its thread.
    pub(super) fn start(path: &Path, options: &StoreOptions) -> anyhow::Result<Self> {
        let db = connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            options,
        )?;
        // A checkpoint syncs the WAL before copying from it, and the
        // database file after; it takes the connection's setting.
        db.pragma_update(None, "synchronous", "FULL")?;
        let shared = Arc::new(Shared {
            commits: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn({
                let shared = shared.clone();
                move || run(&db, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Counts a commit of `writes` deliveries (or one other write); wakes
    /// the thread when a checkpoint becomes due.
    pub(super) fn committed(&self, writes: usize) {
        let shared = &self.shared;
        let commits = shared.commits.fetch_add(1, Ordering::Relaxed);
        let before = shared.writes.fetch_add(writes, Ordering::Relaxed);
        if !due(commits, before) && due(commits + 1, before + writes) {
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and closes its connection.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(db: &rusqlite::Connection, shared: &Shared) {
    let mut last = Instant::now();
    while !shared.stopping.load(Ordering::Relaxed) {
        std::thread::park_timeout(IDLE_CHECKPOINT);
        let commits = shared.commits.load(Ordering::Relaxed);
        let writes = shared.writes.load(Ordering::Relaxed);
        let waited = commits > 0 && last.elapsed() >= IDLE_CHECKPOINT;
        if !(due(commits, writes) || waited) || shared.stopping.load(Ordering::Relaxed) {
            continue;
        }
        shared.commits.fetch_sub(commits, Ordering::Relaxed);
        shared.writes.fetch_sub(writes, Ordering::Relaxed);
        last = Instant::now();
        match checkpoint(db) {
            Ok((wal_pages, copied)) => {
                tracing::debug!(wal_pages, copied, elapsed = ?last.elapsed(), "checkpoint");
            }
            // The writer's backstop checkpoint covers for a failed one.
            Err(error) => tracing::warn!(error = %error, "checkpoint failed"),
        }
    }
    tracing::debug!("db: checkpoint thread stopped");
}

/// A passive checkpoint: copies what no reader still needs; returns the
/// WAL's size and how much of it is now in the database file, in pages.
fn checkpoint(db: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    db.query_row("pragma wal_checkpoint(passive)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}
