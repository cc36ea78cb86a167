//! The outgoing webhooks' queue on SQLite: writes on the write connection,
//! reads on the readers. The statements are `store::outbound`'s.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::ChangeKind;
use crate::store::Chunk;
use crate::store::outbound::{
    self, AttemptRecord, EndpointSummary, MessageState, NextStep, OutboundMessage, Statements,
};
use crate::store::sql::SQLITE;

static SQL: LazyLock<Statements> = LazyLock::new(|| Statements::of(&SQLITE));

pub(super) fn take_lease(
    db: &mut Connection,
    endpoint: &str,
    holder: &str,
    now_ns: i64,
    until_ns: i64,
) -> rusqlite::Result<bool> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(&SQL.add_endpoint)?.execute([endpoint])?;
    let taken = tx
        .prepare_cached(&SQL.take_lease)?
        .execute(params![endpoint, holder, now_ns, until_ns])?;
    tx.commit()?;
    Ok(taken == 1)
}

pub(super) fn make_messages(
    db: &mut Connection,
    endpoint: &str,
    kinds: &[ChangeKind],
    now_ns: i64,
) -> rusqlite::Result<Chunk> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(made_through): Option<i64> = tx
        .prepare_cached(&SQL.made_through)?
        .query_row([endpoint], |row| row.get(0))
        .optional()?
    else {
        return Ok(Chunk {
            passed: 0,
            changed: 0,
        });
    };
    let changes: Vec<(i64, String, String, String, i64)> = tx
        .prepare_cached(&SQL.changes_after)?
        .query_map(params![made_through, outbound::MAKE_CHUNK], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut made = 0;
    {
        let mut insert = tx.prepare_cached(&SQL.insert_message)?;
        for (position, job_id, patient_note_id, kind, at_ns) in &changes {
            if !kinds.iter().any(|wanted| wanted.as_str() == kind) {
                continue;
            }
            made += insert.execute(params![
                outbound::new_message_id(),
                endpoint,
                position,
                job_id,
                patient_note_id,
                kind,
                at_ns,
                now_ns
            ])?;
        }
    }
    if let Some((last, ..)) = changes.last() {
        tx.prepare_cached(&SQL.set_made_through)?
            .execute(params![endpoint, last])?;
    }
    tx.commit()?;
    Ok(Chunk {
        passed: changes.len() as u64,
        changed: made as u64,
    })
}

pub(super) fn due(
    db: &Connection,
    endpoint: &str,
    now_ns: i64,
    limit: u32,
) -> rusqlite::Result<Vec<OutboundMessage>> {
    db.prepare_cached(&SQL.due)?
        .query_map(params![endpoint, now_ns, limit], |row| {
            outbound::message(row)
        })?
        .collect()
}

pub(super) fn settle(
    db: &mut Connection,
    endpoint: &str,
    records: &[AttemptRecord],
) -> rusqlite::Result<()> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for record in records {
        let status = record.status.map(i64::from);
        match record.next {
            NextStep::Delivered => {
                tx.prepare_cached(&SQL.delivered)?.execute(params![
                    record.id,
                    record.at_ns,
                    status,
                    record.error
                ])?;
                tx.prepare_cached(&SQL.endpoint_delivered)?
                    .execute(params![endpoint, record.at_ns])?;
            }
            NextStep::RetryAt(next) => {
                tx.prepare_cached(&SQL.retry)?.execute(params![
                    record.id,
                    record.at_ns,
                    status,
                    record.error,
                    next
                ])?;
                tx.prepare_cached(&SQL.endpoint_failing)?
                    .execute(params![endpoint, record.at_ns])?;
            }
            NextStep::Failed => {
                tx.prepare_cached(&SQL.failed)?.execute(params![
                    record.id,
                    record.at_ns,
                    status,
                    record.error
                ])?;
                tx.prepare_cached(&SQL.endpoint_failing)?
                    .execute(params![endpoint, record.at_ns])?;
            }
        }
    }
    tx.commit()
}

pub(super) fn summary(db: &Connection, endpoint: &str) -> rusqlite::Result<EndpointSummary> {
    Ok(db
        .prepare_cached(&SQL.summary)?
        .query_row([endpoint], |row| {
            Ok(EndpointSummary {
                queued: row.get(0)?,
                failed: row.get(1)?,
                oldest_queued_ns: row.get(2)?,
                last_delivered_ns: row.get(3)?,
                failing_since_ns: row.get(4)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub(super) fn list(
    db: &Connection,
    endpoint: &str,
    state: Option<MessageState>,
    limit: u32,
) -> rusqlite::Result<Vec<OutboundMessage>> {
    db.prepare_cached(&SQL.list)?
        .query_map(
            params![endpoint, state.map(MessageState::as_str), limit],
            |row| outbound::message(row),
        )?
        .collect()
}

pub(super) fn resend(
    db: &mut Connection,
    endpoint: &str,
    id: Option<&str>,
    now_ns: i64,
) -> rusqlite::Result<u64> {
    let resent = db
        .prepare_cached(&SQL.resend)?
        .execute(params![endpoint, id, now_ns])?;
    Ok(resent as u64)
}
