//! Moving up: `copy-from-sqlite` brings a SQLite database's whole history
//! into PostgreSQL, and a second run changes nothing.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_sqlite_keeps_every_kind_of_row_and_can_be_rerun() {
    if !runs_on(
        Engine::Postgres,
        "copy_from_sqlite_keeps_every_kind_of_row_and_can_be_rerun",
    ) {
        return;
    }
    // A history on SQLite: applied, superseded, duplicate, ignored,
    // rejected and recovered events, a payload already purged, repeated
    // deliveries, registered jobs (one still pending), idempotency keys
    // and the audit trail of the reads below.
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
    bodies.push(bodies[3].clone());
    for body in &bodies {
        app.post_webhook(&body.to_string()).await;
    }
    let (status, _) = app
        .register("cp-pending", json!({ "patient_note_id": "pn-cp-pending" }))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .register("cp-1", json!({ "patient_note_id": "pn-cp1" }))
        .await;
    assert!(status.is_success(), "{status}");
    let operator = app.sql().await;
    for statement in [
        "update events set payload = '' where event_id = 'evt_cp1'",
        "update events set source = 'recovered' where event_id = 'evt_cp7'",
        "insert into submissions (idempotency_key, request_mac, state, job_id, created_ns)
         values ('key-done', 'mac-1', 'done', 'cp-1', 1759999999000000000),
                ('key-unknown', 'mac-2', 'unknown', null, 1759999999000000001)",
        // Two audit rows alike in every column but the id: both are copied.
        "insert into audit_log (at, at_ns, actor, action, target, request_id)
         values ('2025-10-09T10:00:00Z', 1760004000000000000, 'ops', 'export', 'all', null),
                ('2025-10-09T10:00:00Z', 1760004000000000000, 'ops', 'export', 'all', null)",
    ] {
        sqlx::query(statement).execute(&operator).await.unwrap();
    }
    operator.close().await;
    let jobs: Vec<String> = (0..12)
        .map(|n| format!("cp-{n}"))
        .chain(["cp-bad".into(), "cp-pending".into()])
        .collect();
    let mut before = Vec::new();
    for job in &jobs {
        before.push(json_of(app.get(&format!("/v1/jobs/{job}")).await).await);
        before.push(json_of(app.get(&format!("/v1/jobs/{job}/events")).await).await);
    }
    assert_eq!(before[26].0, 200);
    assert_eq!(before[26].1["status"], "pending", "{:?}", before[26]);
    let listing = json_of(app.get("/v1/patient-notes?limit=100").await).await;
    let (_, page) = app.get_json("/v1/patient-notes?limit=5").await;
    let next = format!(
        "/v1/patient-notes?limit=5&cursor={}",
        page["next_cursor"].as_str().expect("a next page")
    );
    let second_page = app.get_json(&next).await;
    let feed = app.get_json("/v1/changes?limit=1000").await;
    let feed_after_five = app.get_json("/v1/changes?after=5").await;
    app.stop().await;
    let tables = tables_of(&sqlite).await;
    assert!(
        tables.iter().all(|(_, rows)| !rows.is_empty()),
        "{tables:?}"
    );
    let count = |table: &str| tables.iter().find(|(t, _)| *t == table).unwrap().1.len();
    let read = [
        ("cursor_key", 1),
        ("events", 32),
        ("payloads", 31),
        ("jobs", 12),
        ("expected_jobs", 2),
        ("submissions", 2),
        ("repeated_deliveries", 2),
        ("audit_log", count("audit_log")),
        ("changes", count("changes")),
        ("outbound_messages", 0),
    ];
    assert!(count("audit_log") > 30, "{}", count("audit_log"));

    // Copied into a PostgreSQL database: every row alike.
    let postgres = std::sync::Arc::new(workspace_on(Engine::Postgres));
    let file = sqlite.sqlite_path();
    let (status, output) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{output}");
    for (kind, rows) in read {
        assert!(
            output.contains(&row_of(kind, rows, rows)),
            "{kind}:\n{output}"
        );
    }
    assert!(output.contains("took SQLite's cursor key"), "{output}");
    assert!(
        !output.contains(MRN) && !output.contains(NOTE_TEXT),
        "{output}"
    );
    assert_alike(&tables_of(&postgres).await, &tables);

    // Again: nothing new, and the table says so.
    let (status, again) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{again}");
    for (kind, rows) in read {
        assert!(again.contains(&row_of(kind, rows, 0)), "{kind}:\n{again}");
    }
    assert!(!again.contains("cursor key"), "{again}");
    // The feed is PostgreSQL's own now: not copied over itself.
    assert!(
        again.contains("kept PostgreSQL's own change feed"),
        "{again}"
    );
    assert!(!output.contains("change feed"), "{output}");
    assert_alike(&tables_of(&postgres).await, &tables);

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
    // A cursor made on SQLite still pages on PostgreSQL, and a feed
    // consumer's cursor still reads on where it was.
    assert_eq!(app.get_json(&next).await, second_page);
    assert_eq!(app.get_json("/v1/changes?limit=1000").await, feed);
    assert_eq!(app.get_json("/v1/changes?after=5").await, feed_after_five);
    assert!(feed.1["changes"].as_array().unwrap().len() > 5, "{feed:?}");
    for body in &bodies[..32] {
        let id = body["id"].as_str().unwrap();
        // As SQLite kept it: without the note and subject (the default).
        let expected = (id != "evt_cp1").then(|| {
            cobalt_receiver::payload_storage::PayloadStorage::Minimal
                .kept(&body.to_string(), None)
                .into_owned()
        });
        assert_eq!(postgres.payload_of(id).await, expected, "{id}");
    }
    // Dedupe knows the copied ids, and new audit rows take new ids.
    let (_, answer) = json_of(app.post_webhook(&bodies[5].to_string()).await).await;
    assert_eq!(answer["status"], "duplicate");
    assert_eq!(postgres.count("events").await, 32);
    assert_eq!(postgres.count("repeated_deliveries").await, 3);
    app.stop().await;
    assert!(postgres.count("audit_log").await > count("audit_log") as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_database_that_served_keeps_its_rows_and_loses_none_of_sqlites() {
    if !runs_on(
        Engine::Postgres,
        "copy_into_a_database_that_served_keeps_its_rows_and_loses_none_of_sqlites",
    ) {
        return;
    }
    let sqlite = std::sync::Arc::new(workspace_on(Engine::Sqlite));
    let app = spawn_app_in(sqlite.clone(), |_| {}).await;
    let event = created_event("evt_old", "old-1", "pn-old", "2025-10-09T10:00:00Z");
    app.post_webhook(&event.to_string()).await;
    app.post_webhook(&event.to_string()).await;
    for path in [
        "/v1/jobs/old-1",
        "/v1/jobs/old-1/events",
        "/v1/patient-notes",
    ] {
        assert_eq!(app.get(path).await.status(), 200);
    }
    app.stop().await;
    // The PostgreSQL database served first: its audit ids are SQLite's too.
    let postgres = std::sync::Arc::new(workspace_on(Engine::Postgres));
    let app = spawn_app_in(postgres.clone(), |_| {}).await;
    let event = created_event("evt_new", "new-1", "pn-new", "2025-10-10T10:00:00Z");
    app.post_webhook(&event.to_string()).await;
    app.post_webhook(&event.to_string()).await;
    for path in ["/v1/jobs/new-1", "/v1/jobs/new-1/events"] {
        assert_eq!(app.get(path).await.status(), 200);
    }
    app.stop().await;
    let audit = |tables: Vec<Table>| tables.into_iter().find(|t| t.0 == "audit_log").unwrap().1;
    let old = audit(tables_of(&sqlite).await);
    let own = audit(tables_of(&postgres).await);
    assert!(own.len() >= 2 && old.len() >= 3, "{own:?} {old:?}");
    let last_old: i64 = old.last().unwrap()[0].as_ref().unwrap().parse().unwrap();

    let file = sqlite.sqlite_path();
    let (status, output) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{output}");
    assert!(
        output.contains(&row_of("audit_log", old.len(), old.len())),
        "{output}"
    );
    assert!(
        output.contains(&row_of("repeated_deliveries", 1, 1)),
        "{output}"
    );
    assert!(output.contains(&row_of("cursor_key", 1, 0)), "{output}");
    assert!(
        output.contains("kept PostgreSQL's own cursor key"),
        "{output}"
    );

    // Its own rows as they were; each of SQLite's once, under its id where
    // that was free, else above SQLite's ids.
    let now = audit(tables_of(&postgres).await);
    assert_eq!(now.len(), own.len() + old.len());
    for row in &own {
        assert!(now.contains(row), "{row:?}");
    }
    for row in &old {
        let alike: Vec<_> = now.iter().filter(|r| r[1..] == row[1..]).collect();
        assert_eq!(alike.len(), 1, "{row:?}");
        let id: i64 = alike[0][0].as_ref().unwrap().parse().unwrap();
        let taken = own.iter().any(|r| r[0] == row[0]);
        assert!(
            if taken {
                id > last_old
            } else {
                alike[0][0] == row[0]
            },
            "{row:?} became {:?}",
            alike[0]
        );
    }
    assert_eq!(postgres.count("repeated_deliveries").await, 2);

    let (status, again) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{again}");
    assert!(
        again.contains(&row_of("audit_log", old.len(), 0)),
        "{again}"
    );
    assert!(
        again.contains(&row_of("repeated_deliveries", 1, 0)),
        "{again}"
    );
    assert!(again.contains(&row_of("events", 1, 0)), "{again}");
    assert_eq!(audit(tables_of(&postgres).await), now);

    // New audit rows take ids past every copied one.
    let app = spawn_app_in(postgres.clone(), |_| {}).await;
    assert_eq!(app.get("/v1/jobs/old-1").await.status(), 200);
    app.stop().await;
    assert_eq!(postgres.count("audit_log").await, now.len() as i64 + 1);
}

/// Each table of `copy` as in `original`, row by row; names the first
/// row that differs.
fn assert_alike(copy: &[Table], original: &[Table]) {
    for ((table, copied), (_, rows)) in copy.iter().zip(original) {
        for (n, (copied_row, row)) in copied.iter().zip(rows).enumerate() {
            assert_eq!(copied_row, row, "{table}, row {n}: {copied:?} vs {rows:?}");
        }
        assert_eq!(copied.len(), rows.len(), "{table}");
    }
}

type Table = (&'static str, Vec<Vec<Option<String>>>);

/// The copy's table line for one kind of row.
fn row_of(kind: &str, read: usize, copied: usize) -> String {
    format!("{kind:<20} {read:>10} {copied:>10} {:>10}", read - copied)
}

/// Every copied table of the database of `dir`, row by row, each value as
/// text (SQL both engines run; an event's payload from where each engine
/// keeps it, a purged one null).
async fn tables_of(dir: &Workspace) -> Vec<Table> {
    use sqlx::Row;

    let payload = match dir.engine() {
        Engine::Sqlite => "nullif(payload, '')",
        Engine::Postgres => "(select payload from payloads p where p.seq = e.seq)",
    };
    let events = format!(
        "select event_id, event_type, job_id, patient_note_id, created, received_at,
                cast(attempt as text), outcome, reject_reason, source, {payload}
         from events e order by seq"
    );
    let queries = [
        ("events", events),
        (
            "changes",
            "select cast(position as text), job_id, patient_note_id, kind, cast(at_ns as text)
             from changes order by changes.position"
                .into(),
        ),
        (
            "jobs",
            "select patient_note_id, job_id, status, emr_note_id, failure_reason, reasons,
                    patient_mrn, location_id, access_token_reference_id, deciding_event_id,
                    deciding_event_created, cast(deciding_event_created_ns as text),
                    first_received_at, last_received_at
             from jobs order by patient_note_id, job_id"
                .into(),
        ),
        (
            "expected_jobs",
            "select job_id, patient_note_id, submitted_at, cast(submitted_ns as text),
                    access_token_reference_id, registered_by,
                    cast(cast(resolved as integer) as text)
             from expected_jobs e order by e.job_id"
                .into(),
        ),
        (
            "submissions",
            "select idempotency_key, request_mac, state, job_id, cast(created_ns as text)
             from submissions order by idempotency_key"
                .into(),
        ),
        (
            "repeated_deliveries",
            "select event_id, received_at, cast(attempt as text)
             from repeated_deliveries order by event_id, received_at"
                .into(),
        ),
        // By the column: PostgreSQL's `order by id` would take the text
        // the cast names `id`.
        (
            "audit_log",
            "select cast(id as text), at, cast(at_ns as text), actor, action, target, request_id
             from audit_log a order by a.id"
                .into(),
        ),
    ];
    let db = dir.sql().await;
    let mut tables = Vec::new();
    for (table, sql) in queries {
        let rows = sqlx::query(&sql).fetch_all(&db).await.unwrap();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                    .collect()
            })
            .collect();
        tables.push((table, rows));
    }
    // The key itself, which pagination cursors and request MACs depend on.
    let key: Vec<u8> = sqlx::query_scalar("select key from cursor_key")
        .fetch_one(&db)
        .await
        .unwrap();
    tables.push(("cursor_key", vec![vec![Some(hex(&key))]]));
    db.close().await;
    tables
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
