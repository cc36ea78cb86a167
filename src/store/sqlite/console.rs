//! Console sessions and recovery runs on SQLite (statements in
//! `store::console`).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::console::{self as sql, RecoveryRun, SessionRow, SessionStart};

pub(super) fn start_session(db: &mut Connection, start: &SessionStart) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(sql::DELETE_ENDED_SESSIONS)?
        .execute(params![start.idle_before_ns, start.started_before_ns])?;
    tx.prepare_cached(sql::DELETE_TOKEN_SESSION)?
        .execute(params![start.token_name])?;
    tx.prepare_cached(sql::INSERT_SESSION)?.execute(params![
        start.id_sha256,
        start.token_name,
        start.now_ns
    ])?;
    tx.commit()
}

pub(super) fn session(db: &Connection, id_sha256: &str) -> rusqlite::Result<Option<SessionRow>> {
    db.prepare_cached(sql::SELECT_SESSION)?
        .query_row(params![id_sha256], |row| {
            Ok(SessionRow {
                token_name: row.get(0)?,
                started_ns: row.get(1)?,
                seen_ns: row.get(2)?,
            })
        })
        .optional()
}

pub(super) fn touch_session(db: &Connection, id_sha256: &str, now_ns: i64) -> rusqlite::Result<()> {
    db.prepare_cached(sql::TOUCH_SESSION)?
        .execute(params![now_ns, id_sha256])
        .map(drop)
}

pub(super) fn end_session(db: &Connection, id_sha256: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql::DELETE_SESSION)?
        .execute(params![id_sha256])
        .map(drop)
}

pub(super) fn save_run(db: &mut Connection, run: &RecoveryRun) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(sql::UPSERT_RUN)?.execute(params![
        run.id,
        run.started_by,
        run.started_ns,
        run.plan,
        run.report,
        run.updated_ns,
        run.finished_ns
    ])?;
    tx.prepare_cached(sql::DELETE_OLD_RUNS)?
        .execute(params![sql::RUNS_KEPT])?;
    tx.commit()
}

pub(super) fn run(db: &Connection, id: Option<&str>) -> rusqlite::Result<Option<RecoveryRun>> {
    let read = |row: &rusqlite::Row<'_>| {
        Ok(RecoveryRun {
            id: row.get(0)?,
            started_by: row.get(1)?,
            started_ns: row.get(2)?,
            plan: row.get(3)?,
            report: row.get(4)?,
            updated_ns: row.get(5)?,
            finished_ns: row.get(6)?,
        })
    };
    match id {
        Some(id) => db
            .prepare_cached(&sql::select_run())?
            .query_row(params![id], read)
            .optional(),
        None => db
            .prepare_cached(&sql::select_latest_run())?
            .query_row([], read)
            .optional(),
    }
}
