//! Whether real writes are succeeding, as the writer sees each batch end.
//! Readiness asks this beside its own probe: a probe's small write can
//! succeed while deliveries fail (a disk too full for a new page, a
//! trigger, a constraint), and then the replica is not ready, whatever the
//! probe says, unless the probe failed too since then (it saw the fault,
//! so its passing now says the fault is gone).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// How long a failed batch keeps readiness false when nothing has shown
/// since that writes work. Deliveries that keep failing keep it false; with
/// none arriving (a replica its load balancer stopped sending to) the
/// probe alone decides again after this.
pub const FAILING_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct WriteHealth {
    /// Unix nanoseconds of the last batch committed, the last rolled back,
    /// and the last failed readiness probe (0: never).
    last_committed_ns: AtomicI64,
    last_failed_ns: AtomicI64,
    last_probe_failed_ns: AtomicI64,
}

impl WriteHealth {
    pub fn committed(&self) {
        self.last_committed_ns
            .store(crate::clock::now_ns(), Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.last_failed_ns
            .store(crate::clock::now_ns(), Ordering::Relaxed);
    }

    pub fn probe_failed(&self) {
        self.last_probe_failed_ns
            .store(crate::clock::now_ns(), Ordering::Relaxed);
    }

    /// Whether deliveries are failing in a way the probe has not seen: the
    /// last batch failed, within [`FAILING_FOR`], and neither a batch
    /// committed nor a probe failed since.
    pub fn failing_unseen(&self) -> bool {
        self.failing_unseen_at(crate::clock::now_ns())
    }

    fn failing_unseen_at(&self, now_ns: i64) -> bool {
        let failed = self.last_failed_ns.load(Ordering::Relaxed);
        let committed = self.last_committed_ns.load(Ordering::Relaxed);
        let probe_failed = self.last_probe_failed_ns.load(Ordering::Relaxed);
        let window = i64::try_from(FAILING_FOR.as_nanos()).unwrap_or(i64::MAX);
        failed > committed && failed > probe_failed && now_ns.saturating_sub(failed) < window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn a_failed_batch_counts_until_writes_are_seen_to_work() {
        let health = WriteHealth::default();
        assert!(!health.failing_unseen(), "nothing written yet");
        health.committed();
        tick();
        health.failed();
        assert!(health.failing_unseen());
        let window = i64::try_from(FAILING_FOR.as_nanos()).unwrap();
        assert!(
            !health.failing_unseen_at(crate::clock::now_ns() + window),
            "past the window"
        );
        tick();
        health.committed();
        assert!(!health.failing_unseen(), "a batch committed since");
    }

    #[test]
    fn a_probe_that_saw_the_fault_may_vouch_for_its_end() {
        let health = WriteHealth::default();
        health.failed();
        tick();
        health.probe_failed();
        assert!(!health.failing_unseen(), "the probe saw it");
        tick();
        health.failed();
        assert!(
            health.failing_unseen(),
            "a new failure the probe has not seen"
        );
    }
}
