//! The outgoing webhooks' queue on PostgreSQL, on the read pool's
//! connections. The statements are `store::outbound`'s; the endpoint's row
//! lock orders two replicas making one endpoint's messages at once.

use std::sync::LazyLock;

use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::domain::ChangeKind;
use crate::store::Chunk;
use crate::store::outbound::{
    self, AttemptRecord, EndpointSummary, MessageState, NextStep, OutboundMessage, Statements,
};
use crate::store::sql::POSTGRES;

static SQL: LazyLock<Statements> = LazyLock::new(|| Statements::of(&POSTGRES));

pub(super) async fn take_lease(
    pool: &PgPool,
    endpoint: &str,
    holder: &str,
    now_ns: i64,
    until_ns: i64,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query(&SQL.add_endpoint)
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
    let taken = sqlx::query(&SQL.take_lease)
        .bind(endpoint)
        .bind(holder)
        .bind(now_ns)
        .bind(until_ns)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(taken == 1)
}

pub(super) async fn make_messages(
    pool: &PgPool,
    endpoint: &str,
    kinds: &[ChangeKind],
    now_ns: i64,
) -> sqlx::Result<Chunk> {
    let mut tx = pool.begin().await?;
    let made_through: Option<i64> = sqlx::query_scalar(&format!("{} for update", SQL.made_through))
        .bind(endpoint)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(made_through) = made_through else {
        return Ok(Chunk {
            passed: 0,
            changed: 0,
        });
    };
    let changes: Vec<(i64, String, String, String, i64)> = sqlx::query_as(&SQL.changes_after)
        .bind(made_through)
        .bind(outbound::MAKE_CHUNK)
        .fetch_all(&mut *tx)
        .await?;
    let mut made = 0;
    for (position, job_id, patient_note_id, kind, at_ns) in &changes {
        if !kinds.iter().any(|wanted| wanted.as_str() == kind) {
            continue;
        }
        made += sqlx::query(&SQL.insert_message)
            .bind(outbound::new_message_id())
            .bind(endpoint)
            .bind(position)
            .bind(job_id)
            .bind(patient_note_id)
            .bind(kind)
            .bind(at_ns)
            .bind(now_ns)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    if let Some((last, ..)) = changes.last() {
        sqlx::query(&SQL.set_made_through)
            .bind(endpoint)
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Chunk {
        passed: changes.len() as u64,
        changed: made,
    })
}

pub(super) async fn due(
    pool: &PgPool,
    endpoint: &str,
    now_ns: i64,
    limit: u32,
) -> sqlx::Result<Vec<OutboundMessage>> {
    let rows = sqlx::query(&SQL.due)
        .bind(endpoint)
        .bind(now_ns)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(outbound::message).collect()
}

pub(super) async fn settle(
    pool: &PgPool,
    endpoint: &str,
    records: &[AttemptRecord],
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for record in records {
        let status = record.status.map(i64::from);
        let (statement, next) = match record.next {
            NextStep::Delivered => (&SQL.delivered, None),
            NextStep::RetryAt(next) => (&SQL.retry, Some(next)),
            NextStep::Failed => (&SQL.failed, None),
        };
        let mut query = sqlx::query(statement)
            .bind(&record.id)
            .bind(record.at_ns)
            .bind(status)
            .bind(&record.error);
        if let Some(next) = next {
            query = query.bind(next);
        }
        query.execute(&mut *tx).await?;
        let endpoint_statement = match record.next {
            NextStep::Delivered => &SQL.endpoint_delivered,
            _ => &SQL.endpoint_failing,
        };
        sqlx::query(endpoint_statement)
            .bind(endpoint)
            .bind(record.at_ns)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

pub(super) async fn summary(pool: &PgPool, endpoint: &str) -> sqlx::Result<EndpointSummary> {
    let row = sqlx::query(&SQL.summary)
        .bind(endpoint)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(EndpointSummary::default());
    };
    Ok(EndpointSummary {
        queued: row.try_get(0)?,
        failed: row.try_get(1)?,
        oldest_queued_ns: row.try_get(2)?,
        last_delivered_ns: row.try_get(3)?,
        failing_since_ns: row.try_get(4)?,
    })
}

pub(super) async fn list(
    pool: &PgPool,
    endpoint: &str,
    state: Option<MessageState>,
    limit: u32,
) -> sqlx::Result<Vec<OutboundMessage>> {
    let rows = sqlx::query(&SQL.list)
        .bind(endpoint)
        .bind(state.map(MessageState::as_str))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(outbound::message).collect()
}

pub(super) async fn resend(
    pool: &PgPool,
    endpoint: &str,
    id: Option<&str>,
    now_ns: i64,
) -> sqlx::Result<u64> {
    Ok(sqlx::query(&SQL.resend)
        .bind(endpoint)
        .bind(id)
        .bind(now_ns)
        .execute(pool)
        .await?
        .rows_affected())
}
