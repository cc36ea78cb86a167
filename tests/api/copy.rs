//! Moving up: `copy-from-sqlite` brings a SQLite database's whole history
//! into PostgreSQL, and a second run changes nothing.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_sqlite_keeps_every_event_payload_and_state_and_can_be_rerun() {
    if !runs_on(
        Engine::Postgres,
        "copy_from_sqlite_keeps_every_event_payload_and_state_and_can_be_rerun",
    ) {
        return;
    }
    // A history on SQLite: applied, superseded, duplicate, ignored,
    // rejected, and a payload already purged.
    let sqlite = std::sync::Arc::new(workspace_on(Engine::Sqlite));
    let app = spawn_app_in(sqlite.clone(), |_| {}).await;
    let mut bodies: Vec<Value> = Vec::new();
    for n in 0..30 {
        let (id, job, note) = (
            format!("evt_cp{n}"),
            format!("cp-{}", n % 12),
            format!("pn-cp{}", n % 12),
        );
        let created = format!("2025-10-09T10:00:{:02}Z", n);
        bodies.push(if n % 4 == 0 {
            failed_event(&id, &job, &note, &created)
        } else {
            created_event(&id, &job, &note, &created)
        });
    }
    bodies.push(json!({"id": "evt_cp_other", "type": "appointment.created", "data": {}}));
    let mut invalid = created_event("evt_cp_bad", "cp-bad", "pn-cp-bad", "2025-10-09T10:00:00Z");
    invalid["data"]
        .as_object_mut()
        .unwrap()
        .remove("emr_note_id");
    bodies.push(invalid);
    bodies.push(bodies[3].clone());
    for body in &bodies {
        app.post_webhook(&body.to_string()).await;
    }
    let operator = app.sql().await;
    sqlx::query("update events set payload = '' where event_id = 'evt_cp1'")
        .execute(&operator)
        .await
        .unwrap();
    operator.close().await;
    let jobs: Vec<String> = (0..12)
        .map(|n| format!("cp-{n}"))
        .chain(["cp-bad".into()])
        .collect();
    let mut before = Vec::new();
    for job in &jobs {
        before.push(json_of(app.get(&format!("/v1/jobs/{job}")).await).await);
        before.push(json_of(app.get(&format!("/v1/jobs/{job}/events")).await).await);
    }
    let listing = json_of(app.get("/v1/patient-notes?limit=100").await).await;
    app.stop().await;

    // Copied into a PostgreSQL database, twice.
    let postgres = std::sync::Arc::new(workspace_on(Engine::Postgres));
    let file = sqlite.sqlite_path();
    let (status, output) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{output}");
    assert!(
        output.contains("32 events read, 32 added (31 with payloads), 0 already there")
            && output.contains("12 job states read, 12 added"),
        "{output}"
    );
    assert!(
        !output.contains(MRN) && !output.contains(NOTE_TEXT),
        "{output}"
    );
    let (status, again) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{again}");
    assert!(
        again.contains("32 events read, 0 added (0 with payloads), 32 already there")
            && again.contains("12 job states read, 0 added or advanced"),
        "{again}"
    );

    // The PostgreSQL engine answers exactly as the SQLite one did.
    let app = spawn_app_in(postgres.clone(), |_| {}).await;
    let mut after = Vec::new();
    for job in &jobs {
        after.push(json_of(app.get(&format!("/v1/jobs/{job}")).await).await);
        after.push(json_of(app.get(&format!("/v1/jobs/{job}/events")).await).await);
    }
    assert_eq!(before, after);
    assert_eq!(
        listing,
        json_of(app.get("/v1/patient-notes?limit=100").await).await
    );
    for body in &bodies[..32] {
        let id = body["id"].as_str().unwrap();
        let expected = (id != "evt_cp1").then(|| body.to_string());
        assert_eq!(postgres.payload_of(id).await, expected, "{id}");
    }
    // Dedupe knows the copied ids.
    let (_, answer) = json_of(app.post_webhook(&bodies[5].to_string()).await).await;
    assert_eq!(answer["status"], "duplicate");
    assert_eq!(postgres.count("events").await, 32);
}

#[tokio::test]
async fn copy_from_sqlite_refuses_a_sqlite_target_and_a_missing_file() {
    let dir = workspace_on(Engine::Sqlite);
    let (status, output) = run(&dir, &[], &["copy-from-sqlite", "/no/such/file.db"]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("copies into PostgreSQL"), "{output}");
    if engine() == Engine::Postgres {
        let dir = workspace_on(Engine::Postgres);
        let (status, output) = run(&dir, &[], &["copy-from-sqlite", "/no/such/file.db"]);
        assert_eq!(status.code(), Some(1), "{output}");
        assert!(
            output.contains("/no/such/file.db does not exist"),
            "{output}"
        );
        assert_eq!(output.trim().lines().count(), 1, "{output}");
    }
}
