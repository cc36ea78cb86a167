//! When the database cannot take a write, the answer is a prompt 503 (which
//! Cobalt retries), never a 2xx and never a hang.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use crate::helpers::*;

#[tokio::test]
async fn a_locked_database_is_a_prompt_503_and_the_service_recovers() {
    let app = spawn_app_with(|config| config.write_timeout_ms = 300).await;
    let url = format!("sqlite://{}", db_path(&app.dir).display());

    // Another process holds the write lock past the write timeout.
    let mut holder = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("begin immediate")
        .execute(&mut holder)
        .await
        .unwrap();

    let event = created_event("evt_locked", "95", "pn-95", "2025-10-09T10:00:00Z").to_string();
    let started = Instant::now();
    let response = app.post_webhook(&event).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = json_of(response).await;
    assert_eq!(body["code"], "storage_unavailable");
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");

    // Reads do not wait for the writer.
    assert_eq!(app.get("/readyz").await.status(), 200);

    sqlx::query("rollback").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    // Cobalt's retry succeeds once the lock is gone, without a restart.
    let (status, body) = json_of(app.post_webhook(&event).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "applied");
    assert_eq!(app.count("events").await, 1);
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_database_file() {
    let app = spawn_app().await;
    app.post_webhook(&created_event("evt_s1", "96", "pn-96", "2025-10-09T10:00:00Z").to_string())
        .await;
    app.post_webhook(&failed_event("evt_s2", "97", "pn-97", "2025-10-09T10:00:00Z").to_string())
        .await;
    let (_, job_before) = json_of(app.get("/v1/jobs/96").await).await;
    let (_, events_before) = json_of(app.get("/v1/jobs/97/events").await).await;
    let dir = app.stop().await;

    let app = spawn_app_in(dir, |_| {}).await;
    let (status, job_after) = json_of(app.get("/v1/jobs/96").await).await;
    assert_eq!(status, 200);
    assert_eq!(job_before, job_after);
    assert_eq!(
        events_before,
        json_of(app.get("/v1/jobs/97/events").await).await.1
    );
    // Dedupe remembers across the restart.
    let replay = created_event("evt_s1", "96", "pn-96", "2025-10-09T10:00:00Z").to_string();
    assert_eq!(
        json_of(app.post_webhook(&replay).await).await.1["status"],
        "duplicate"
    );
    assert_eq!(app.count("events").await, 2);
}
