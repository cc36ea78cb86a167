//! The server's background tasks (the purges, the recovery sweep, the
//! planner's statistics, the console's report of refused sign-ins), held
//! in one place so they stop one way.
//!
//! Each task is started by name. At shutdown one signal (a watch channel)
//! stops them all at their next await; each then has a bounded time to
//! end, after which it is aborted. A task that ended by panicking is
//! logged by name.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running background tasks.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl Background {
    pub fn new() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Runs `task` until it ends or shutdown begins, whichever comes first.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        let handle = tokio::spawn(async move {
            // The sender gone (the server dropped unstarted) stops it too.
            tokio::select! {
                () = task => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
        self.tasks.push((name, handle));
    }

    /// Signals every task to stop and waits, `limit` at most for all of
    /// them, for each to end; one still running then is aborted.
    pub async fn shutdown(self, limit: Duration) {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + limit;
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_panic() => {
                    tracing::error!(task = name, "a background task panicked");
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    task.abort();
                    tracing::warn!(task = name, "a background task did not stop in time");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_every_task_at_once_a_panicked_one_too() {
        let mut background = Background::new();
        background.spawn("forever", std::future::pending());
        background.spawn("panics", async { panic!("on purpose") });
        background.spawn("ends", async {});
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        background.shutdown(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_dropped_set_stops_its_tasks() {
        let mut background = Background::new();
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        background.spawn("holds a sender", async move {
            let _sender = sender;
            std::future::pending::<()>().await;
        });
        drop(background);
        // The task ends, and its sender with it.
        assert!(receiver.await.is_err());
    }
}
