//! The change feed on SQLite. The writer inserts each change in the
//! transaction that makes it, and one writer commits at a time, so the row
//! id a change takes is its commit order: its position, from the start.
//! SQLite gives a new row the greatest id plus one, so the purge keeps the
//! newest change: no position is ever given twice.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::domain::ChangeKind;
use crate::store::Chunk;
use crate::store::feed::ChangePage;
use crate::store::sql::{self, SQLITE};

/// Inserts one change; its row id is its position.
pub(super) const INSERT_CHANGE: &str =
    "insert into changes (job_id, patient_note_id, kind, at_ns) values (?, ?, ?, ?)";

/// Up to `limit` changes after `after`, with the feed's bounds, in one
/// snapshot.
pub(super) fn changes(
    db: &Connection,
    after: i64,
    limit: u32,
    overdue_before_ns: i64,
) -> rusqlite::Result<ChangePage> {
    let mut statement = db.prepare_cached(&SQLITE.changes_after())?;
    let mut rows = statement.query(params![after, limit])?;
    let mut page = ChangePage {
        changes: Vec::new(),
        purged_through: 0,
        last_position: 0,
    };
    while let Some(row) = rows.next()? {
        let (change, purged_through, last_position) = sql::change_row(row, overdue_before_ns)?;
        page.changes.extend(change);
        page.purged_through = purged_through;
        page.last_position = last_position;
    }
    Ok(page)
}

/// Notes, once each, the pending jobs submitted before `before_ns` as
/// overdue, as changes at `now_ns`. Returns how many.
pub(super) fn note_overdue(
    db: &mut Connection,
    before_ns: i64,
    now_ns: i64,
) -> rusqlite::Result<u64> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let jobs: Vec<(String, String)> = tx
        .prepare_cached(
            "select job_id, patient_note_id from expected_jobs
             where resolved = 0 and overdue_noted = 0 and submitted_ns < ?
               and not exists (select 1 from jobs where jobs.job_id = expected_jobs.job_id)
             order by submitted_ns limit 1000",
        )?
        .query_map([before_ns], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    {
        let mut mark =
            tx.prepare_cached("update expected_jobs set overdue_noted = 1 where job_id = ?")?;
        let mut insert = tx.prepare_cached(INSERT_CHANGE)?;
        for (job_id, patient_note_id) in &jobs {
            mark.execute([job_id])?;
            insert.execute(params![
                job_id,
                patient_note_id,
                ChangeKind::Overdue.as_str(),
                now_ns
            ])?;
        }
    }
    tx.commit()?;
    Ok(jobs.len() as u64)
}

/// Deletes up to `limit` of the oldest changes noted before `cutoff_ns`,
/// in position order, stopping at the first one still kept (and before
/// the newest), and the outgoing messages settled before it.
pub(super) fn purge(db: &mut Connection, cutoff_ns: i64, limit: u64) -> rusqlite::Result<Chunk> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from: i64 = tx
        .prepare_cached("select purged_through from change_purge where id = 1")?
        .query_row([], |row| row.get(0))?;
    let (mut through, mut passed) = (from, 0);
    {
        // Never the newest: its position is the next one's floor.
        let mut next = tx.prepare_cached(
            "select position, at_ns < ? from changes
             where position > ? and position < (select max(position) from changes)
             order by position limit ?",
        )?;
        let mut rows = next.query(params![
            cutoff_ns,
            from,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
        while let Some(row) = rows.next()? {
            if !row.get::<_, bool>(1)? {
                break;
            }
            through = row.get(0)?;
            passed += 1;
        }
    }
    let deleted = tx
        .prepare_cached("delete from changes where position > ? and position <= ?")?
        .execute(params![from, through])?;
    tx.prepare_cached("update change_purge set purged_through = ? where id = 1")?
        .execute([through])?;
    tx.prepare_cached(
        "delete from outbound_messages where rowid in (
             select rowid from outbound_messages
             where state <> 'queued' and settled_ns < ? limit ?)",
    )?
    .execute(params![cutoff_ns, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    tx.commit()?;
    Ok(Chunk {
        passed,
        changed: deleted as u64,
    })
}
