//! Whether the database can be reached, as this replica last found out.
//! Once a read or the writer finds it unreachable (refused, reset, out of
//! connection slots, shutting down), reads and deliveries are answered 503
//! at once instead of each waiting out a connect or acquire timeout, and
//! one task alone tries to connect, every half second, until it can.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::PgPool;

/// How often the one probe tries while the database is unreachable.
const PROBE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub(super) struct Reachability {
    down: AtomicBool,
}

impl Reachability {
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Takes note of an error; if it says the database cannot be reached,
    /// marks it down and starts the probe (one, whoever calls).
    pub(super) fn note(self: &Arc<Self>, error: &sqlx::Error, pool: &PgPool) {
        // A pool that timed out with no connection open could not open one.
        let no_connection = matches!(error, sqlx::Error::PoolTimedOut) && pool.size() == 0;
        if !(unreachable(error) || no_connection) || self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(
            error = %super::cause(error),
            "db: the database cannot be reached; answering 503 at once until it can"
        );
        let (reachability, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if pool.is_closed() {
                    return;
                }
                let probe = tokio::time::timeout(PROBE_EVERY * 4, pool.acquire()).await;
                if let Ok(Ok(_connection)) = probe {
                    reachability.down.store(false, Ordering::Release);
                    tracing::info!("db: the database can be reached again");
                    return;
                }
            }
        });
    }
}

/// Whether an error says the database cannot be reached at all, rather
/// than that one statement failed.
pub(super) fn unreachable(error: &sqlx::Error) -> bool {
    match error {
        // Not a pool timeout: all connections busy under load is no outage.
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // connection exception; too many connections; admin, crash or
            // cannot-connect-now shutdown
            code.starts_with("08") || matches!(code.as_ref(), "53300" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}
