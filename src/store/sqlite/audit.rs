//! The audit trail: appended and purged on the write connection, paged on
//! a reader.

use rusqlite::{Connection, TransactionBehavior, params_from_iter};

use super::reader::values;
use crate::store::sql::SQLITE;
use crate::store::{AuditEntry, AuditQuery, AuditRow, Chunk};

/// Appends audit rows in one transaction.
pub(super) fn append(
    db: &mut rusqlite::Connection,
    entries: &[AuditEntry],
) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "insert into audit_log (at, at_ns, actor, action, target, request_id)
             values (?, ?, ?, ?, ?, ?)",
        )?;
        for entry in entries {
            insert.execute(rusqlite::params![
                crate::clock::rfc3339(entry.at),
                crate::clock::unix_ns(entry.at),
                entry.actor,
                entry.action,
                entry.target,
                entry.request_id,
            ])?;
        }
    }
    tx.commit()
}

/// Deletes up to `limit` audit rows recorded before `cutoff_ns`.
pub(super) fn purge(
    db: &mut rusqlite::Connection,
    cutoff_ns: i64,
    limit: u64,
) -> rusqlite::Result<Chunk> {
    let deleted = db
        .prepare_cached(
            "delete from audit_log where id in
               (select id from audit_log where at_ns < ? order by id limit ?)",
        )?
        .execute(rusqlite::params![
            cutoff_ns,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
    Ok(Chunk {
        passed: deleted as u64,
        changed: deleted as u64,
    })
}

/// A page of the audit trail, newest first.
pub(super) fn page(db: &Connection, query: &AuditQuery) -> rusqlite::Result<Vec<AuditRow>> {
    let page = SQLITE.audit_page(query);
    db.prepare_cached(&page.sql)?
        .query_map(params_from_iter(values(page.values)), |row| {
            Ok(AuditRow {
                id: row.get(0)?,
                at: row.get(1)?,
                actor: row.get(2)?,
                action: row.get(3)?,
                target: row.get(4)?,
                request_id: row.get(5)?,
            })
        })?
        .collect()
}
