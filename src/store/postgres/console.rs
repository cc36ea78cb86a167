//! Console sessions and recovery runs on PostgreSQL (statements in
//! `store::console`).

use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Acquire, Row};

use crate::store::console::{self as sql, RecoveryRun, SessionRow, SessionStart};

pub(super) async fn start_session(pool: &PgPool, start: &SessionStart) -> sqlx::Result<()> {
    let mut connection = pool.acquire().await?;
    let mut tx = connection.begin().await?;
    sqlx::query(sql::DELETE_ENDED_SESSIONS)
        .bind(start.idle_before_ns)
        .bind(start.started_before_ns)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::DELETE_TOKEN_SESSION)
        .bind(&start.token_name)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::INSERT_SESSION)
        .bind(&start.id_sha256)
        .bind(&start.token_name)
        .bind(start.now_ns)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub(super) async fn session(pool: &PgPool, id_sha256: &str) -> sqlx::Result<Option<SessionRow>> {
    let row = sqlx::query(sql::SELECT_SESSION)
        .bind(id_sha256)
        .fetch_optional(pool)
        .await?;
    row.map(|row| {
        Ok(SessionRow {
            token_name: row.try_get(0)?,
            started_ns: row.try_get(1)?,
            seen_ns: row.try_get(2)?,
        })
    })
    .transpose()
}

pub(super) async fn touch_session(pool: &PgPool, id_sha256: &str, now_ns: i64) -> sqlx::Result<()> {
    sqlx::query(sql::TOUCH_SESSION)
        .bind(now_ns)
        .bind(id_sha256)
        .execute(pool)
        .await
        .map(drop)
}

pub(super) async fn end_session(pool: &PgPool, id_sha256: &str) -> sqlx::Result<()> {
    sqlx::query(sql::DELETE_SESSION)
        .bind(id_sha256)
        .execute(pool)
        .await
        .map(drop)
}

pub(super) async fn save_run(pool: &PgPool, run: &RecoveryRun) -> sqlx::Result<()> {
    let mut connection = pool.acquire().await?;
    let mut tx = connection.begin().await?;
    sqlx::query(sql::UPSERT_RUN)
        .bind(&run.id)
        .bind(&run.started_by)
        .bind(run.started_ns)
        .bind(&run.plan)
        .bind(&run.report)
        .bind(run.updated_ns)
        .bind(run.finished_ns)
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::DELETE_OLD_RUNS)
        .bind(sql::RUNS_KEPT)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

pub(super) async fn run(pool: &PgPool, id: Option<&str>) -> sqlx::Result<Option<RecoveryRun>> {
    let row = match id {
        Some(id) => {
            sqlx::query(&sql::select_run())
                .bind(id)
                .fetch_optional(pool)
                .await?
        }
        None => {
            sqlx::query(&sql::select_latest_run())
                .fetch_optional(pool)
                .await?
        }
    };
    row.map(|row: PgRow| {
        Ok(RecoveryRun {
            id: row.try_get(0)?,
            started_by: row.try_get(1)?,
            started_ns: row.try_get(2)?,
            plan: row.try_get(3)?,
            report: row.try_get(4)?,
            updated_ns: row.try_get(5)?,
            finished_ns: row.try_get(6)?,
        })
    })
    .transpose()
}
