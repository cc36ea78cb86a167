//! Raw payloads are patient data: they are emptied once older than the
//! retention period, while each event's id (for dedupe), outcome and its
//! job's state stay forever. The purge runs through the writer in small
//! transactions, so deliveries keep flowing between them.

use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{Store, StoreError};

/// Purges expired payloads every `interval` until the store stops (a
/// background task).
pub async fn purge_every(store: Store, retention: Duration, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let cutoff = OffsetDateTime::now_utc() - retention;
        match store.purge_payloads(cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "emptied payloads past the retention period"),
            Err(StoreError::Stopped) => return,
            Err(error) => {
                tracing::warn!(error = %error, "purging payloads failed; retrying later")
            }
        }
    }
}
