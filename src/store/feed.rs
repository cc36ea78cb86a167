//! The change feed: every change of a job's state, at a position that
//! follows commit order, read with the job's state as it is now.
//!
//! On SQLite one writer commits at a time, so a change's row id is its
//! position. On PostgreSQL several replicas commit at once and a sequence
//! taken before commit can commit out of order, so changes are written
//! without a position and a relay gives them one once they are committed
//! (see `postgres::feed`). Either way a reader that asks for the changes
//! after the last position it saw never misses one that commits later.

use std::sync::Arc;

use tokio::sync::watch;

use super::JobState;
use crate::domain::ChangeKind;

/// One change, with its job's state as it is when read.
#[derive(Debug, Clone)]
pub struct Change {
    pub position: i64,
    pub kind: ChangeKind,
    /// When the service learned of it, unix ns.
    pub at_ns: i64,
    pub job: JobState,
}

/// A page of the feed, and the bounds a cursor is judged against.
#[derive(Debug, Clone)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Changes at or before this position were purged.
    pub purged_through: i64,
    /// The last position given so far.
    pub last_position: i64,
}

/// Wakes readers waiting for the feed to move (`?wait=`): bumped whenever
/// changes take positions, here or (heard from the database) on another
/// replica.
pub struct FeedSignal(watch::Sender<u64>);

impl FeedSignal {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(watch::Sender::new(0)))
    }

    /// Changes took positions.
    pub fn moved(&self) {
        self.0.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A receiver that sees every move after this call.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// Changes are purged this many at a time, in one transaction each.
pub(super) const PURGE_CHUNK: u64 = 1_000;
