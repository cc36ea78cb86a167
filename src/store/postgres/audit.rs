//! The audit trail: appended, paged and purged on the read pool's
//! connections.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::reader::bind_all;
use crate::store::sql::POSTGRES;
use crate::store::{AuditEntry, AuditQuery, AuditRow, Chunk};

/// Appends rows with one multi-row insert. A lock held past `lock_timeout`
/// fails the transaction in the database, so rows reported as failed are
/// never committed later.
pub(super) async fn append(
    pool: &PgPool,
    entries: Vec<AuditEntry>,
    lock_timeout: Duration,
) -> sqlx::Result<()> {
    let mut at = Vec::with_capacity(entries.len());
    let mut at_ns = Vec::with_capacity(entries.len());
    let (mut actor, mut action, mut target, mut request_id) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in entries {
        at.push(crate::clock::rfc3339(entry.at));
        at_ns.push(crate::clock::unix_ns(entry.at));
        actor.push(entry.actor);
        action.push(entry.action);
        target.push(entry.target);
        request_id.push(entry.request_id);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", lock_timeout.as_millis()))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into audit_log (at, at_ns, actor, action, target, request_id)
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                              $5::text[], $6::text[])",
    )
    .bind(at)
    .bind(at_ns)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(request_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A page of the audit trail, newest first.
pub(super) async fn page(pool: &PgPool, query: &AuditQuery) -> sqlx::Result<Vec<AuditRow>> {
    let page = POSTGRES.audit_page(query);
    bind_all(sqlx::query(&page.sql), page.values)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| {
            Ok(AuditRow {
                id: row.try_get(0)?,
                at: row.try_get(1)?,
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                target: row.try_get(4)?,
                request_id: row.try_get(5)?,
            })
        })
        .collect()
}

/// Deletes up to `limit` audit rows recorded before `cutoff_ns`.
pub(super) async fn purge(pool: &PgPool, cutoff_ns: i64, limit: u64) -> sqlx::Result<Chunk> {
    sqlx::query(
        "delete from audit_log where id in
           (select id from audit_log where at_ns < $1 order by id limit $2)",
    )
    .bind(cutoff_ns)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .execute(pool)
    .await
    .map(|done| Chunk {
        passed: done.rows_affected(),
        changed: done.rows_affected(),
    })
}
