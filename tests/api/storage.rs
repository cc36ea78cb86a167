//! When the database cannot take a write, the answer is a prompt 503 (which
//! Cobalt retries), never a 2xx and never a hang. And what is written
//! reaches the database file as the service runs.

use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn a_locked_database_is_a_prompt_503_and_the_service_recovers() {
    let app = spawn_app_with(|config| config.write_timeout_ms = 300).await;
    // Another process holds the write lock past the write timeout.
    let lock = app.hold_write_lock().await;

    let event = created_event("evt_locked", "95", "pn-95", "2025-10-09T10:00:00Z").to_string();
    let started = Instant::now();
    let response = app.post_webhook(&event).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = json_of(response).await;
    assert_eq!(body["code"], "storage_unavailable");
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");

    // Readiness reports it; status reads do not wait for the writer.
    let (status, body) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, 503);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cannot take writes"),
        "{body}"
    );
    assert_eq!(app.get("/v1/jobs/95").await.status(), 404);

    lock.release().await;
    // Cobalt's retry succeeds once the lock is gone, without a restart.
    assert_eq!(app.get("/readyz").await.status(), 200);
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

/// The events in the database file alone, as SQLite reads a copy of it
/// made without its WAL; `None` while the copy cannot be read (a
/// checkpoint was writing it).
fn events_in_the_file_without_its_wal(app: &TestApp, scratch: &std::path::Path) -> Option<i64> {
    let copy = scratch.join("copy.db");
    for stale in ["copy.db", "copy.db-wal", "copy.db-shm"] {
        let _ = std::fs::remove_file(scratch.join(stale));
    }
    std::fs::copy(app.sqlite_path(), &copy).ok()?;
    let db = rusqlite::Connection::open(&copy).ok()?;
    db.query_row("select count(*) from events", [], |row| row.get(0))
        .ok()
}

#[tokio::test]
async fn what_the_wal_holds_reaches_the_database_file_while_the_service_runs() {
    // WAL checkpoints are SQLite's; PostgreSQL checkpoints by itself.
    if !runs_on(
        Engine::Sqlite,
        "what_the_wal_holds_reaches_the_database_file_while_the_service_runs",
    ) {
        return;
    }
    let app = spawn_app().await;
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(
        events_in_the_file_without_its_wal(&app, scratch.path()),
        Some(0)
    );

    // A handful of deliveries, far fewer pages than the writer's own
    // checkpoint waits for: the checkpoint thread copies them within about
    // a second of the last.
    for n in 0..3 {
        let event = created_event(
            &format!("evt_ck{n}"),
            &format!("{}", 300 + n),
            "pn-ck",
            "2025-10-09T10:00:00Z",
        );
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let in_file = events_in_the_file_without_its_wal(&app, scratch.path());
        if in_file == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database file alone still holds {in_file:?} events of 3"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The service goes on as before.
    let (status, job) = json_of(app.get("/v1/jobs/302").await).await;
    assert_eq!(
        (status.as_u16(), job["status"].as_str()),
        (200, Some("created"))
    );
}

#[tokio::test]
async fn a_full_disk_is_a_prompt_503_and_the_service_recovers_when_space_returns() {
    // max_database_bytes limits the SQLite file; a PostgreSQL server's disk is its own.
    if !runs_on(
        Engine::Sqlite,
        "a_full_disk_is_a_prompt_503_and_the_service_recovers_when_space_returns",
    ) {
        return;
    }
    // Whole payloads, so the padding below fills the file.
    let app = spawn_app_with(|config| {
        config.max_database_bytes = 512 * 1024;
        config.payload_storage = cobalt_receiver::payload_storage::PayloadStorage::Full;
    })
    .await;
    let padded = |n: usize| {
        let mut event = created_event(
            &format!("evt_d{n:03}"),
            &format!("d{n:03}"),
            "pn-d",
            "2025-10-09T10:00:00Z",
        );
        event["data"]["note"] = serde_json::Value::String("padding ".repeat(250));
        event.to_string()
    };
    // Fill the database one event at a time until it refuses.
    let mut n = 0;
    let refused_in = loop {
        let started = Instant::now();
        let response = app.post_webhook(&padded(n)).await;
        if response.status() == 503 {
            break started.elapsed();
        }
        assert_eq!(response.status(), 200);
        n += 1;
        assert!(n < 500, "the database never filled up");
    };
    assert!(
        refused_in < Duration::from_secs(1),
        "refused after {refused_in:?}"
    );
    let stored = app.count("events").await;
    assert_eq!(stored, n as i64, "the refused event left nothing behind");
    let (status, body) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, 503);
    assert!(body["detail"].as_str().unwrap().contains("full"), "{body}");

    // Space returns (here: an operator frees pages); no restart needed.
    let operator = app.sql().await;
    sqlx::query("delete from events where event_id < 'evt_d040'")
        .execute(&operator)
        .await
        .unwrap();
    operator.close().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let (status, body) = json_of(app.post_webhook(&padded(n)).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_flood_is_shed_within_the_deadline_and_every_2xx_is_stored() {
    // A stalled writer (the lock stands in for a slow disk), a short queue
    // and deadline, and far more deliveries than fit.
    let app = spawn_app_with(|config| {
        config.write_timeout_ms = 400;
        config.write_queue_capacity = 16;
        config.write_batch_size = 8;
    })
    .await;
    let lock = app.hold_write_lock().await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        lock.release().await;
    });

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300 {
        let (client, address) = (app.client.clone(), app.address.clone());
        tasks.spawn(async move {
            // Spread over a second: some arrive while stalled, some after.
            tokio::time::sleep(Duration::from_millis(n * 3)).await;
            let body = created_event(
                &format!("evt_flood{n}"),
                &format!("fl{n}"),
                "pn-fl",
                "2025-10-09T10:00:00Z",
            )
            .to_string();
            let started = Instant::now();
            let response = post_signed(&client, &format!("{address}/webhooks/cobalt"), body).await;
            let status = response.status().as_u16();
            let code = response.json::<serde_json::Value>().await.unwrap()["code"].clone();
            (format!("evt_flood{n}"), status, code, started.elapsed())
        });
    }
    let answers = tasks.join_all().await;
    release.await.unwrap();

    let overloaded = answers.iter().filter(|a| a.2 == "overloaded").count();
    let accepted: Vec<_> = answers.iter().filter(|a| a.1 == 200).collect();
    assert!(overloaded > 0, "nothing was shed");
    assert!(!accepted.is_empty(), "nothing got through after the stall");
    for (id, status, code, took) in &answers {
        assert!([200, 503].contains(status), "{id}: {status} {code}");
        // Every answer comes within the deadline (plus scheduling slack),
        // far inside Cobalt's 5 s.
        assert!(
            *took < Duration::from_millis(1_400),
            "{id} answered after {took:?}"
        );
    }
    let db = app.sql().await;
    for (id, ..) in accepted {
        let stored: i64 = sqlx::query_scalar("select count(*) from events where event_id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(stored, 1, "{id} was acknowledged but is not stored");
    }
}

#[tokio::test]
async fn a_read_only_database_is_a_503_and_the_service_recovers_when_writable() {
    // File permissions are the SQLite engine's; PostgreSQL's faults are in replicas.rs.
    if !runs_on(
        Engine::Sqlite,
        "a_read_only_database_is_a_503_and_the_service_recovers_when_writable",
    ) || !running_as_root("a_read_only_database_is_a_503_and_the_service_recovers_when_writable")
    {
        return;
    }
    let app = spawn_app().await;
    let event = |n: u32| {
        created_event(
            &format!("evt_ro{n}"),
            &format!("ro{n}"),
            "pn-ro",
            "2025-10-09T10:00:00Z",
        )
        .to_string()
    };
    assert_eq!(app.post_webhook(&event(0)).await.status(), 200);

    let db = app.sqlite_path();
    let wal = db.with_extension("db-wal");
    let read_only = Immutable::set(vec![db, wal]);
    let started = Instant::now();
    let (status, body) = json_of(app.post_webhook(&event(1)).await).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "storage_unavailable");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(app.get("/readyz").await.status(), 503);
    // What was stored before is still served.
    assert_eq!(app.get("/v1/jobs/ro0").await.status(), 200);

    drop(read_only);
    assert_eq!(app.get("/readyz").await.status(), 200);
    let (status, body) = json_of(app.post_webhook(&event(1)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count("events").await, 2);
}
