//! The change feed's upkeep, in the background of every replica: pending
//! jobs that pass `overdue_after` are noted as changes (once each, whichever
//! replica sees them first), and changes older than
//! `change_retention_days` are purged with the outgoing messages settled
//! before then.

use std::time::Duration;

use crate::store::{Store, StoreError};

/// How often pending jobs are checked for having become overdue: an
/// overdue change is noted at most this long after the job's deadline.
pub const OVERDUE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Notes overdue jobs every [`OVERDUE_CHECK_EVERY`] until the store stops.
pub async fn note_overdue_every(store: Store) {
    loop {
        tokio::time::sleep(OVERDUE_CHECK_EVERY).await;
        match store.note_overdue().await {
            Ok(0) => {}
            Ok(noted) => tracing::debug!(noted, "noted overdue jobs in the change feed"),
            Err(StoreError::Stopped) => return,
            Err(error) => tracing::warn!(error = %error, "noting overdue jobs failed; retrying"),
        }
    }
}

/// Purges changes kept longer than `retention` every `interval` until the
/// store stops.
pub async fn purge_every(store: Store, retention: Duration, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let cutoff = crate::clock::ns_ago(retention);
        match store.purge_changes(cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged changes past change_retention_days"),
            Err(StoreError::Stopped) => return,
            Err(error) => tracing::warn!(error = %error, "purging changes failed; retrying later"),
        }
    }
}
