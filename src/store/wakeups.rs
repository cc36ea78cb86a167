//! Wakes the clients waiting for a job's outcome (`GET /v1/jobs/{id}?wait=`)
//! once it is committed, without any of them polling the database.
//!
//! A waiter watches its job id, then reads the job, then sleeps until a
//! wake-up, re-reading once per wake-up. Writers wake the ids of the jobs
//! a committed batch decided; on PostgreSQL, other replicas' commits arrive
//! through `LISTEN` (see the engine's `notify` module), and a lost listener
//! connection wakes everyone, since what it missed is unknown. Wake-ups are
//! hints: a waiter always re-reads the job before answering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Wakeups {
    waiting: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Waiters right now; lets writers skip the map when nobody waits.
    count: AtomicUsize,
    /// Set at shutdown: waiters answer at once.
    closed: AtomicBool,
    everyone: Notify,
}

impl Wakeups {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Starts watching `job_id`. Watch before reading the job, so a commit
    /// between the read and the wait still wakes.
    pub fn watch(self: &Arc<Self>, job_id: &str) -> Watch {
        let notify = {
            let mut waiting = self.waiting.lock().expect("not poisoned");
            let entry = waiting
                .entry(job_id.to_owned())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        Watch {
            wakeups: self.clone(),
            job_id: job_id.to_owned(),
            notify,
        }
    }

    /// Wakes the waiters of these jobs.
    pub fn wake<'a>(&self, job_ids: impl IntoIterator<Item = &'a str>) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let waiting = self.waiting.lock().expect("not poisoned");
        for job_id in job_ids {
            if let Some((notify, _)) = waiting.get(job_id) {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (after a lost notification channel).
    pub fn wake_all(&self) {
        self.everyone.notify_waiters();
    }

    /// Lets every waiter go, now and from now on (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.everyone.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many clients are waiting.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A client's interest in one job, until dropped.
pub struct Watch {
    wakeups: Arc<Wakeups>,
    job_id: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// A future that completes at the next wake-up of this job (or of
    /// everyone). Make it before reading the job, await it after.
    pub fn next(&self) -> impl Future<Output = ()> + '_ {
        let job = self.notify.notified();
        let everyone = self.wakeups.everyone.notified();
        // Tokio's `Notified` receives `notify_waiters` from its creation
        // on, before its first poll: a commit during the read still wakes.
        async move {
            if self.wakeups.is_closed() {
                return;
            }
            tokio::select! {
                () = job => {}
                () = everyone => {}
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiting = self.wakeups.waiting.lock().expect("not poisoned");
        if let Some(entry) = waiting.get_mut(&self.job_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiting.remove(&self.job_id);
            }
        }
        self.wakeups.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(next: impl Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), next)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wake_up_reaches_only_the_waiters_of_its_job() {
        let wakeups = Wakeups::new();
        let (a, b) = (wakeups.watch("1"), wakeups.watch("2"));
        let (next_a, next_b) = (a.next(), b.next());
        wakeups.wake(["1"]);
        assert!(woken(next_a).await);
        assert!(!woken(next_b).await);
    }

    #[tokio::test]
    async fn a_wake_up_before_the_first_poll_is_not_lost() {
        // A handler makes the future, reads the job, then awaits.
        let wakeups = Wakeups::new();
        let watch = wakeups.watch("1");
        let next = watch.next();
        wakeups.wake(["1"]);
        assert!(woken(next).await);
    }

    #[tokio::test]
    async fn closing_lets_everyone_go_and_the_map_empties() {
        let wakeups = Wakeups::new();
        let watch = wakeups.watch("1");
        let next = watch.next();
        wakeups.close();
        assert!(woken(next).await);
        assert!(woken(watch.next()).await, "after close, waits end at once");
        drop(watch);
        assert_eq!(wakeups.waiting(), 0);
        assert!(wakeups.waiting.lock().unwrap().is_empty());
    }
}
