//! Outcomes committed on one replica wake the waiters on the others (and
//! the change feed's relay, `feed`, wakes the feed's readers the same way).
//!
//! After each commit the writer hands the job ids it decided to the
//! notifier, which gathers them for a few milliseconds and sends them in
//! one `pg_notify` statement, outside the write transaction: a `NOTIFY`
//! inside it would serialise every replica's commits on PostgreSQL's
//! notification queue lock. Every replica listens on its own connection
//! and wakes the local waiters of the ids it hears of. Notifications are
//! hints (a waiter re-reads the job): one lost to a crash between commit
//! and notify only makes a waiter answer at its deadline, and a listener
//! that loses its connection wakes every waiter, since what it missed is
//! unknown.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::Wakeups;
use crate::store::feed::FeedSignal;

/// The channel every replica listens on.
const CHANNEL: &str = "cobalt_receiver_outcomes";
/// How long the notifier gathers ids before it sends them.
const GATHER: Duration = Duration::from_millis(10);
/// Bytes of one notification's payload (PostgreSQL's limit is 8000).
const MAX_PAYLOAD: usize = 7_900;

/// The writer's handle on the notifier.
#[derive(Clone)]
pub(super) struct Notifier(mpsc::Sender<Vec<String>>);

impl Notifier {
    /// Queues the ids of jobs a batch decided; dropped if the notifier is
    /// far behind (a hint, never worth holding a writer up).
    pub(super) fn decided(&self, job_ids: &[&str]) {
        let _ = self
            .0
            .try_send(job_ids.iter().map(|id| (*id).to_owned()).collect());
    }
}

/// Starts the notifier (on `pool`) and the listener (on `listen`, a pool
/// of one connection of its own). Returns the writer's handle and the
/// tasks, which run until aborted.
pub(super) fn start(
    pool: PgPool,
    listen: PgPool,
    wakeups: Arc<Wakeups>,
    feed: Arc<FeedSignal>,
) -> (Notifier, Vec<JoinHandle<()>>) {
    let (sender, receiver) = mpsc::channel(1024);
    let tasks = vec![
        tokio::spawn(send(pool, receiver)),
        tokio::spawn(listen_for(listen, wakeups, feed)),
    ];
    (Notifier(sender), tasks)
}

async fn send(pool: PgPool, mut decided: mpsc::Receiver<Vec<String>>) {
    while let Some(mut job_ids) = decided.recv().await {
        tokio::time::sleep(GATHER).await;
        while let Ok(more) = decided.try_recv() {
            job_ids.extend(more);
        }
        job_ids.sort_unstable();
        job_ids.dedup();
        let payloads = payloads(&job_ids);
        let sent = sqlx::query("select pg_notify($1, payload) from unnest($2::text[]) as payload")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await;
        if let Err(error) = sent {
            tracing::debug!(error = %super::cause(&error), "notifying other replicas failed");
        }
    }
}

/// The ids joined by newlines, in payloads under PostgreSQL's limit. (An
/// id too long for one is left out: its waiters on other replicas answer
/// at their deadline.)
fn payloads(job_ids: &[String]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for id in job_ids.iter().filter(|id| id.len() < MAX_PAYLOAD) {
        if current.len() + id.len() + 1 > MAX_PAYLOAD {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

async fn listen_for(pool: PgPool, wakeups: Arc<Wakeups>, feed: Arc<FeedSignal>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(error = %super::cause(&error), "listening for other replicas' outcomes failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen_all([CHANNEL, super::feed::CHANNEL]).await {
            tracing::debug!(error = %super::cause(&error), "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything decided before LISTEN took effect is unknown here.
        wakeups.wake_all();
        feed.moved();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == super::feed::CHANNEL => {
                    feed.moved()
                }
                Ok(Some(notification)) => wakeups.wake(notification.payload().split('\n')),
                // The connection was lost (sqlx reconnects on the next
                // call); what was sent meanwhile is gone.
                Ok(None) => {
                    wakeups.wake_all();
                    feed.moved();
                }
                Err(error) => {
                    tracing::debug!(error = %super::cause(&error), "the listening connection failed; reconnecting");
                    wakeups.wake_all();
                    feed.moved();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_keep_every_id() {
        let ids: Vec<String> = (0..3000).map(|n| format!("job-{n:06}")).collect();
        let payloads = payloads(&ids);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<&str> = payloads.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(super::payloads(&["x".repeat(MAX_PAYLOAD)]).is_empty());
    }
}
