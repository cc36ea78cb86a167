//! The change feed on PostgreSQL, gap-free while replicas commit at once.
//!
//! A writer inserts each change in the transaction that makes it, with a
//! `seq` from a sequence but no position. A sequence alone would not do:
//! two transactions take 101 and 102, 102 commits first, a reader passes
//! 102, and 101 is never read. So positions are given after commit, by the
//! relay: any replica, one at a time (the row lock on `change_positions`,
//! taken with `skip locked`), gives the changes it can see committed their
//! positions after the last one, in `seq` order, in one transaction. A
//! reader asking for `position > cursor` then only ever sees positions
//! whose every predecessor was visible before them.
//!
//! A job's changes keep their order: each is inserted after its
//! transaction has locked the job's row (its outcome, or its registration),
//! which the earlier change's transaction held until it committed, so the
//! later change has the greater `seq` and is never visible without the
//! earlier one.
//!
//! The relay runs when this replica commits a change (kicked, then
//! [`GATHER`] later, so one run serves the batches committed meanwhile),
//! and every [`RELAY_EVERY`] in case a kick was missed or another
//! replica's relay held the lock. It notifies [`CHANNEL`], so every replica's
//! readers waiting for the feed hear that it moved.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::domain::ChangeKind;
use crate::store::Chunk;
use crate::store::feed::{ChangePage, FeedSignal};
use crate::store::sql::{self, POSTGRES};

/// The channel the relay notifies when changes take positions.
pub(super) const CHANNEL: &str = "cobalt_receiver_changes";
/// The relay runs at least this often.
const RELAY_EVERY: Duration = Duration::from_secs(1);
/// After a kick, the relay waits this long for more commits to join the
/// same run: under load one relay transaction then serves many batches.
const GATHER: Duration = Duration::from_millis(10);
/// Most changes one relay transaction positions.
const RELAY_CHUNK: i64 = 1_000;
/// How long the relay waits before trying again when another replica holds
/// the positions, and how many times.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
const BUSY_TRIES: u32 = 50;

/// Starts the relay. Returns its kick (notify it after committing a
/// change) and its task, which runs until aborted.
pub(super) fn start(pool: PgPool, feed: Arc<FeedSignal>) -> (Arc<Notify>, JoinHandle<()>) {
    let kick = Arc::new(Notify::new());
    let task = tokio::spawn(relay(pool, kick.clone(), feed));
    (kick, task)
}

async fn relay(pool: PgPool, kick: Arc<Notify>, feed: Arc<FeedSignal>) {
    loop {
        tokio::select! {
            () = kick.notified() => tokio::time::sleep(GATHER).await,
            () = tokio::time::sleep(RELAY_EVERY) => {}
        }
        let mut busy = 0;
        loop {
            match position_committed(&pool).await {
                Ok(Relayed::Positioned(count)) => {
                    if count > 0 {
                        feed.moved();
                    }
                    if count < RELAY_CHUNK {
                        break;
                    }
                }
                // Another replica is relaying; what it cannot see yet of
                // ours is left for the next try.
                Ok(Relayed::Busy) if busy < BUSY_TRIES => {
                    busy += 1;
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Ok(Relayed::Busy) => break,
                Err(error) => {
                    tracing::debug!(error = %super::cause(&error), "positioning changes failed; retrying");
                    break;
                }
            }
        }
    }
}

enum Relayed {
    Positioned(i64),
    Busy,
}

/// One relay transaction: the lock, then the positions (a statement that
/// starts after the lock is held, so it sees every change committed before
/// the last relay's positions were).
async fn position_committed(pool: &PgPool) -> sqlx::Result<Relayed> {
    let mut tx = pool.begin().await?;
    let last: Option<i64> = sqlx::query_scalar(
        "select last_position from change_positions where id = 1 for update skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last else {
        return Ok(Relayed::Busy);
    };
    let count = sqlx::query(
        "with next as (
             select seq, row_number() over (order by seq) as n
             from (select seq from changes where position is null order by seq limit $2) as s
         )
         update changes set position = $1 + next.n from next where changes.seq = next.seq",
    )
    .bind(last)
    .bind(RELAY_CHUNK)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    if count > 0 {
        sqlx::query("update change_positions set last_position = $1 where id = 1")
            .bind(last + count)
            .execute(&mut *tx)
            .await?;
        sqlx::query("select pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Relayed::Positioned(count))
}

/// Up to `limit` changes after `after`, with the feed's bounds, in one
/// statement (one snapshot).
pub(super) async fn changes(
    pool: &PgPool,
    after: i64,
    limit: u32,
    overdue_before_ns: i64,
) -> sqlx::Result<ChangePage> {
    let rows = sqlx::query(&POSTGRES.changes_after())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    sql::change_page(&rows, overdue_before_ns)
}

/// Notes, once each, the pending jobs submitted before `before_ns` as
/// overdue, as changes at `now_ns`. A job whose outcome a batch is
/// committing right now is skipped (its row is locked): it is no longer
/// pending. Returns how many it noted.
pub(super) async fn note_overdue(pool: &PgPool, before_ns: i64, now_ns: i64) -> sqlx::Result<u64> {
    let noted = sqlx::query(
        "with due as (
             select job_id from expected_jobs
             where not resolved and not overdue_noted and submitted_ns < $1
               and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)
             order by submitted_ns
             limit 1000
             for update skip locked
         ),
         marked as (
             update expected_jobs set overdue_noted = true from due
             where expected_jobs.job_id = due.job_id
             returning expected_jobs.job_id, expected_jobs.patient_note_id
         )
         insert into changes (job_id, patient_note_id, kind, at_ns)
         select job_id, patient_note_id, $3, $2 from marked",
    )
    .bind(before_ns)
    .bind(now_ns)
    .bind(ChangeKind::Overdue.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(noted)
}

/// Deletes up to `limit` of the oldest positioned changes noted before
/// `cutoff_ns`, in position order, stopping at the first one still kept,
/// and outgoing messages settled before it. When another replica is
/// purging, does nothing.
pub(super) async fn purge(pool: &PgPool, cutoff_ns: i64, limit: u64) -> sqlx::Result<Chunk> {
    let mut tx = pool.begin().await?;
    let from: Option<i64> = sqlx::query_scalar(
        "select purged_through from change_purge where id = 1 for update skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(from) = from else {
        return Ok(Chunk {
            passed: 0,
            changed: 0,
        });
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "select position, at_ns < $1 from changes where position > $2 order by position limit $3",
    )
    .bind(cutoff_ns)
    .bind(from)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let expired: Vec<i64> = rows
        .iter()
        .take_while(|(_, expired)| *expired)
        .map(|(position, _)| *position)
        .collect();
    let through = expired.last().copied().unwrap_or(from);
    let deleted = sqlx::query("delete from changes where position > $1 and position <= $2")
        .bind(from)
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("update change_purge set purged_through = $1 where id = 1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "delete from outbound_messages where id in (
             select id from outbound_messages
             where state <> 'queued' and settled_ns < $1 limit $2)",
    )
    .bind(cutoff_ns)
    .bind(limit)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Chunk {
        passed: expired.len() as u64,
        changed: deleted,
    })
}
