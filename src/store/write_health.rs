//! Whether real writes are succeeding, as the writer sees each batch end.
//! Readiness asks this beside its own probe: a probe's small write can
//! succeed while deliveries fail (a disk too full for a new page, a
//! trigger, a constraint), and then the replica is not ready, whatever the
//! probe says.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How long a failed batch keeps readiness false when no batch has
/// succeeded since: long enough for a load balancer to see it, short
/// enough that a replica taken out of rotation (so sent no deliveries)
/// returns on its probe alone.
pub const FAILING_FOR: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Unix nanoseconds of the last batch committed, and the last rolled
    /// back (0: never).
    last_committed_ns: AtomicI64,
    last_failed_ns: AtomicI64,
}

impl WriteHealth {
    pub fn committed(&self) {
        self.last_committed_ns.store(now_ns(), Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.last_failed_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Whether the last batch failed, within [`FAILING_FOR`].
    pub fn failing(&self) -> bool {
        self.failing_at(now_ns())
    }

    fn failing_at(&self, now_ns: i64) -> bool {
        let failed = self.last_failed_ns.load(Ordering::Relaxed);
        let committed = self.last_committed_ns.load(Ordering::Relaxed);
        let window = i64::try_from(FAILING_FOR.as_nanos()).unwrap_or(i64::MAX);
        failed > committed && now_ns.saturating_sub(failed) < window
    }
}

fn now_ns() -> i64 {
    crate::store::unix_ns(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_batch_decides_for_a_while() {
        let health = WriteHealth::default();
        assert!(!health.failing(), "nothing written yet");
        health.committed();
        assert!(!health.failing());
        std::thread::sleep(Duration::from_millis(2));
        health.failed();
        assert!(health.failing());
        let window = i64::try_from(FAILING_FOR.as_nanos()).unwrap();
        assert!(!health.failing_at(now_ns() + window), "past the window");
        std::thread::sleep(Duration::from_millis(2));
        health.committed();
        assert!(!health.failing(), "a batch committed since");
    }
}
