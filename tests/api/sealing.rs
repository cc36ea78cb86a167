//! Patient data at rest: the minimal payload by default, payloads and MRNs
//! sealed under the operator's keys, rotation while serving, and refusals
//! when a key the data needs is missing. Each test reads the raw database
//! (SQLite's main file and WAL; PostgreSQL through `pg_dump`), as someone
//! with a copy of it would.

use std::sync::Arc;

use cobalt_receiver::payload_storage::PayloadStorage;
use cobalt_receiver::sealing::Keyring;
use cobalt_receiver::secret::Secret;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::console::{Browser, console_on, csrf_of, minutes_ago};
use crate::helpers::*;
use crate::process::{TEST_ENV, run};

/// Test keys (32 bytes each, in base64); for tests only.
const K1: &str = ENCRYPTION_KEY;
const K2: &str = "k2:dGVzdC1rZXktdHdvLW5vdC1hLXNlY3JldC0wMDAwMDI=";
const K1_MATERIAL: &str = "dGVzdC1rZXktb25lLW5vdC1hLXNlY3JldC0wMDAwMDE=";
const K2_MATERIAL: &str = "dGVzdC1rZXktdHdvLW5vdC1hLXNlY3JldC0wMDAwMDI=";

fn with_keys(keys: &'static [&'static str]) -> impl FnOnce(&mut cobalt_receiver::config::Config) {
    move |config| seal_with(config, keys)
}

/// Everything the database holds on disk, as one byte string: the SQLite
/// file and its WAL, or a `pg_dump` of every table.
async fn raw_database(dir: &Workspace) -> Vec<u8> {
    match dir.engine() {
        Engine::Sqlite => {
            let path = dir.sqlite_path();
            let mut bytes = std::fs::read(&path).unwrap();
            let wal = path.with_extension("db-wal");
            bytes.extend(std::fs::read(wal).unwrap_or_default());
            bytes
        }
        Engine::Postgres => {
            let url = dir.database_url().to_owned();
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new("pg_dump")
                    .args(["--data-only", "--no-owner", &url])
                    .output()
                    .expect("pg_dump runs (PostgreSQL's client tools are installed)")
            })
            .await
            .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            output.stdout
        }
    }
}

/// Whether `haystack` holds `text` as text or as hex (either case).
fn holds(haystack: &[u8], text: &str) -> bool {
    let lower = hex::encode(text);
    let upper = lower.to_uppercase();
    [text, lower.as_str(), upper.as_str()].iter().any(|needle| {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    })
}

/// Delivers a created and a failed outcome for jobs `first..first+count`,
/// each with the test note, subject and MRN.
async fn deliver(app: &TestApp, first: u32, count: u32) {
    for n in first..first + count {
        let failed = failed_event(
            &format!("evt_f{n}"),
            &n.to_string(),
            &format!("pn-{n}"),
            &minutes_ago(3),
        );
        let created = created_event(
            &format!("evt_c{n}"),
            &n.to_string(),
            &format!("pn-{n}"),
            &minutes_ago(2),
        );
        for event in [failed, created] {
            let response = app.post_webhook(&event.to_string()).await;
            assert_eq!(response.status(), 200);
        }
    }
}

/// The MRN a `phi` token reads for `job_id`.
async fn mrn_of(app: &TestApp, job_id: u32) -> Value {
    let (status, job) = app
        .call(
            Method::GET,
            &format!("/v1/jobs/{job_id}"),
            Some(PHI_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{job}");
    job["patient_mrn"].clone()
}

#[tokio::test]
async fn by_default_no_note_text_or_subject_reaches_the_database() {
    let app = spawn_app().await;
    deliver(&app, 100, 3).await;
    // A patient-note event of an unusual shape, kept as rejected.
    let mut odd = created_event("evt_odd", "199", "pn-199", &minutes_ago(1));
    odd["data"]["emr_note_id"] = Value::Null;
    assert_eq!(app.post_webhook(&odd.to_string()).await.status(), 422);

    let kept: Value = serde_json::from_str(&app.dir.payload_of("evt_c100").await.unwrap()).unwrap();
    assert_eq!(
        kept["data"]["note"]["sha256"],
        hex::encode(Sha256::digest(NOTE_TEXT))
    );
    assert_eq!(kept["data"]["note"]["length"], NOTE_TEXT.len());
    assert_eq!(kept["data"]["subject"]["length"], SUBJECT.len());
    assert_eq!(kept["data"]["patient_mrn"], MRN, "no key: the MRN is kept");
    assert_eq!(kept["id"], "evt_c100");

    let running = raw_database(&app.dir).await;
    let dir = app.stop().await;
    for raw in [running, raw_database(&dir).await] {
        assert!(holds(&raw, "evt_c100"), "the check reads the database");
        assert!(!holds(&raw, NOTE_TEXT), "the note text is in the database");
        assert!(!holds(&raw, SUBJECT), "the subject is in the database");
    }
}

#[tokio::test]
async fn full_keeps_the_signed_bytes_and_none_keeps_no_payload() {
    let app = spawn_app_with(|config| config.payload_storage = PayloadStorage::Full).await;
    let body = created_event("evt_full", "201", "pn-201", &minutes_ago(1)).to_string();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(
        app.dir.payload_of("evt_full").await.as_deref(),
        Some(body.as_str())
    );
    app.stop().await;

    let app = spawn_app_with(|config| config.payload_storage = PayloadStorage::None).await;
    let body = created_event("evt_none", "202", "pn-202", &minutes_ago(1)).to_string();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(app.dir.payload_of("evt_none").await, None);
    // The job's state is whole all the same.
    assert_eq!(mrn_of(&app, 202).await, MRN);
    let dir = app.stop().await;
    assert!(!holds(&raw_database(&dir).await, NOTE_TEXT));
}

#[tokio::test]
async fn with_a_key_no_mrn_reaches_the_database_and_a_phi_token_reads_it() {
    let app = spawn_app_with(with_keys(&[K1])).await;
    deliver(&app, 300, 3).await;
    for job in 300..303 {
        assert_eq!(mrn_of(&app, job).await, MRN);
    }
    let (status, masked) = app.get_json("/v1/jobs/300").await;
    assert_eq!(status, 200);
    assert_eq!(
        masked["patient_mrn"],
        format!("***{}", &MRN[MRN.len() - 4..])
    );

    let running = raw_database(&app.dir).await;
    let dir = app.stop().await;
    for raw in [running, raw_database(&dir).await] {
        assert!(holds(&raw, "evt_c300"), "the check reads the database");
        assert!(!holds(&raw, MRN), "an MRN is in the database");
        assert!(!holds(&raw, NOTE_TEXT) && !holds(&raw, SUBJECT));
        assert!(!holds(&raw, K1_MATERIAL), "the key is in the database");
    }
    let db = dir.sql().await;
    let unsealed: i64 = sqlx::query_scalar(
        "select count(*) from jobs where patient_mrn_key is null or patient_mrn_key <> 'k1'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(unsealed, 0);
    db.close().await;
}

/// The rows of every table that holds patient data or keys, for "nothing
/// changed".
async fn snapshot(dir: &Workspace) -> Vec<String> {
    let db = dir.sql().await;
    let mut rows = Vec::new();
    for query in [
        "select patient_note_id || '|' || job_id || '|' || coalesce(patient_mrn, '') || '|' || coalesce(patient_mrn_key, '') from jobs order by 1",
        "select event_id || '|' || outcome from events order by 1",
        "select key_id || '|' || cast(announced_ns as text) from sealing_keys order by 1",
    ] {
        let found: Vec<String> = sqlx::query_scalar(query).fetch_all(&db).await.unwrap();
        rows.extend(found);
    }
    db.close().await;
    rows
}

#[tokio::test]
async fn a_start_without_a_key_the_data_needs_exits_2_naming_it_and_changes_nothing() {
    let app = spawn_app_with(with_keys(&[K1])).await;
    deliver(&app, 400, 2).await;
    let dir = app.stop().await;
    let before = snapshot(&dir).await;

    for keys in [K2, ""] {
        let mut env = TEST_ENV.to_vec();
        env.push(("COBALT_RECEIVER_ENCRYPTION_KEYS", keys));
        let (status, output) = run(&dir, &env, &["serve"]);
        assert_eq!(status.code(), Some(2), "{output}");
        // One error line (beside the start-up log), naming the key id.
        let errors: Vec<&str> = output.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{output}");
        assert!(errors[0].starts_with("error: encryption_keys"), "{output}");
        assert!(errors[0].contains("key id k1"), "{output}");
        assert!(
            !output.contains(K1_MATERIAL) && !output.contains(K2_MATERIAL),
            "{output}"
        );
    }
    assert_eq!(
        snapshot(&dir).await,
        before,
        "a refused start changed the data"
    );

    // The right key starts it, and every MRN reads.
    let app = spawn_app_in(dir, with_keys(&[K1])).await;
    assert_eq!(mrn_of(&app, 401).await, MRN);
    app.stop().await;
}

#[tokio::test]
async fn rotation_moves_every_value_to_the_new_key_while_serving() {
    // Jobs kept before any key existed, then under k1.
    let app = spawn_app().await;
    deliver(&app, 500, 3).await;
    let dir = app.stop().await;
    let app = spawn_app_in(dir, with_keys(&[K1])).await;
    deliver(&app, 510, 3).await;
    let dir = app.stop().await;

    // The replica now seals under k2 and opens k1; it serves throughout.
    let app = spawn_app_in(dir.clone(), with_keys(&[K2, K1])).await;
    deliver(&app, 520, 2).await;

    // A process recorded k1 moments ago: rotation re-seals, but does not
    // retire k1 until no process has sealed under it for a while.
    let mut env = TEST_ENV.to_vec();
    let keys = format!("{K2},{K1}");
    env.push(("COBALT_RECEIVER_ENCRYPTION_KEYS", &keys));
    let (status, output) = rotate(&dir, &env, "0").await;
    assert_eq!(status, Some(1), "{output}");
    assert!(output.contains("still seals under key id k1"), "{output}");
    assert!(!output.contains(K1_MATERIAL) && !output.contains(K2_MATERIAL));

    // As if the process that sealed under k1 stopped long ago.
    let db = dir.sql().await;
    sqlx::query("update sealing_keys set announced_ns = 0 where key_id = 'k1'")
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let (status, output) = rotate(&dir, &env, "0").await;
    assert_eq!(status, Some(0), "{output}");
    assert!(
        output.contains("remove it from encryption_keys"),
        "{output}"
    );

    // Nothing is left under k1 or unsealed, and k1 left the registry.
    let db = dir.sql().await;
    let (jobs, payloads) = match dir.engine() {
        Engine::Sqlite => (
            "select count(*) from jobs where patient_mrn_key is not 'k2'",
            "select count(*) from events where payload <> '' and payload_key is not 'k2'",
        ),
        Engine::Postgres => (
            "select count(*) from jobs where patient_mrn_key is distinct from 'k2'",
            "select count(*) from payloads where payload_key is distinct from 'k2'",
        ),
    };
    for query in [jobs, payloads] {
        let left: i64 = sqlx::query_scalar(query).fetch_one(&db).await.unwrap();
        assert_eq!(left, 0, "{query}");
    }
    let registry: Vec<String> = sqlx::query_scalar("select key_id from sealing_keys")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(registry, ["k2"]);
    db.close().await;
    app.stop().await;

    // k2 alone opens everything; k1 is gone.
    let app = spawn_app_in(dir, with_keys(&[K2])).await;
    for job in (500..503).chain(510..513).chain(520..522) {
        assert_eq!(mrn_of(&app, job).await, MRN, "job {job}");
    }
    let dir = app.stop().await;
    // Rows hold no MRN in the clear; pages SQLite freed may, until the
    // file is rebuilt, as docs/operations.md tells the operator to do.
    if dir.engine() == Engine::Sqlite {
        let db = dir.sql().await;
        for statement in ["vacuum", "pragma wal_checkpoint(truncate)"] {
            sqlx::query(statement).execute(&db).await.unwrap();
        }
        db.close().await;
    }
    let raw = raw_database(&dir).await;
    assert!(
        !holds(&raw, MRN),
        "an MRN is in the database after rotation"
    );
}

async fn rotate(dir: &Arc<Workspace>, env: &[(&str, &str)], wait: &str) -> (Option<i32>, String) {
    let dir = dir.clone();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let wait = wait.to_owned();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, output) = run(&dir, &env, &["rotate-keys", "--wait-secs", &wait]);
        (status.code(), output)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_opens_nowhere() {
    let app = spawn_app_with(with_keys(&[K1])).await;
    let other_mrn = "MRN-OTHER-445566";
    deliver(&app, 600, 1).await;
    let mut event = created_event("evt_c601", "601", "pn-601", &minutes_ago(1));
    event["data"]["patient_mrn"] = other_mrn.into();
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    assert_eq!(mrn_of(&app, 601).await, other_mrn);

    // Someone with write access to the database swaps the two values.
    let db = app.dir.sql().await;
    let sealed: Vec<(String, String)> = sqlx::query_as(
        "select job_id, patient_mrn from jobs where job_id in ('600', '601') order by job_id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    for (job_id, value) in [("600", &sealed[1].1), ("601", &sealed[0].1)] {
        sqlx::query("update jobs set patient_mrn = $1 where job_id = $2")
            .bind(value)
            .bind(job_id)
            .execute(&db)
            .await
            .unwrap();
    }
    db.close().await;

    for job in ["600", "601"] {
        for token in [PHI_TOKEN, TOKEN] {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/v1/jobs/{job}"),
                    Some(token),
                    None,
                    &[],
                )
                .await;
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["code"], "sealed_value_unreadable");
            let text = body.to_string();
            assert!(!text.contains(MRN) && !text.contains(other_mrn), "{text}");
        }
    }
    // Other jobs still read.
    deliver(&app, 602, 1).await;
    assert_eq!(mrn_of(&app, 602).await, MRN);
    app.stop().await;
}

#[test]
fn generate_key_prints_a_key_line_the_configuration_takes() {
    let dir = workspace();
    let (status, output) = run(&dir, &[], &["generate-key", "2026-12"]);
    assert!(status.success(), "{output}");
    let line = output.trim();
    assert!(line.starts_with("2026-12:"), "{output}");
    let keys = Keyring::parse(&[Secret::new(line)]).unwrap();
    assert_eq!(keys.sealing_id(), Some("2026-12"));

    let (status, output) = run(&dir, &[], &["generate-key", "no spaces"]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("key id"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_sqlite_keeps_sealed_values_sealed() {
    if !runs_on(
        Engine::Postgres,
        "copy_from_sqlite_keeps_sealed_values_sealed",
    ) {
        return;
    }
    let sqlite = Arc::new(workspace_on(Engine::Sqlite));
    let app = spawn_app_in(sqlite.clone(), with_keys(&[K1])).await;
    deliver(&app, 700, 3).await;
    app.stop().await;

    let postgres = Arc::new(workspace_on(Engine::Postgres));
    let file = sqlite.sqlite_path();
    let (status, output) = run(
        &postgres,
        &[],
        &["copy-from-sqlite", file.to_str().unwrap()],
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("sealing_keys"), "{output}");
    let raw = raw_database(&postgres).await;
    assert!(holds(&raw, "evt_c700"), "the check reads the database");
    assert!(!holds(&raw, MRN) && !holds(&raw, NOTE_TEXT));

    // Without k1, PostgreSQL refuses to start as SQLite would.
    let mut env = TEST_ENV.to_vec();
    env.push(("COBALT_RECEIVER_ENCRYPTION_KEYS", K2));
    let (status, output) = run(&postgres, &env, &["serve"]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("key id k1"), "{output}");

    let app = spawn_app_in(postgres, with_keys(&[K1])).await;
    for job in 700..703 {
        assert_eq!(mrn_of(&app, job).await, MRN);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_console_and_its_export_read_sealed_mrns_as_before() {
    let app = spawn_app_with(|config| {
        console_on(config);
        seal_with(config, &[K1]);
    })
    .await;
    deliver(&app, 800, 1).await;
    let masked = format!("***{}", &MRN[MRN.len() - 4..]);

    let reader = Browser::signed_in(&app, TOKEN).await;
    for path in ["/ui/jobs/800", "/ui/jobs?status=created"] {
        let page = reader.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains(&masked), "{path}: {}", page.body);
        assert!(!page.body.contains(MRN), "{path}");
    }
    // The export reads the same sealed rows (it carries no MRN column).
    let export = reader.get("/ui/jobs.csv").await;
    assert_eq!(export.status, 200);
    assert!(
        export.body.contains("\"800\",\"pn-800\",\"created\""),
        "{}",
        export.body
    );

    let records = Browser::signed_in(&app, PHI_TOKEN).await;
    let page = records.get("/ui/jobs/800").await;
    let revealed = records
        .post("/ui/jobs/800/reveal-mrn", &[("csrf", &csrf_of(&page.body))])
        .await;
    assert_eq!(revealed.status, 200);
    assert!(revealed.body.contains(MRN));
    app.stop().await;
}

#[tokio::test]
async fn a_value_that_does_not_open_is_a_500_and_the_log_names_its_key_id() {
    let dir = Arc::new(workspace());
    let mut env = TEST_ENV.to_vec();
    env.push(("COBALT_RECEIVER_ENCRYPTION_KEYS", K1));
    let dir_for_server = dir.clone();
    let env_owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut server = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env_owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        crate::process::start(&dir_for_server, &env, &[])
    })
    .await
    .unwrap();
    let body = created_event("evt_c900", "900", "pn-900", &minutes_ago(1)).to_string();
    assert_eq!(
        server
            .post(body.as_bytes(), &sign(body.as_bytes()))
            .await
            .status(),
        200
    );

    // The sealed MRN is changed at rest (one byte of its base64).
    let db = dir.sql().await;
    sqlx::query(
        "update jobs set patient_mrn =
             case when substr(patient_mrn, 1, 1) = 'A' then 'B' else 'A' end || substr(patient_mrn, 2)
         where job_id = '900'",
    )
    .execute(&db)
    .await
    .unwrap();
    db.close().await;

    let answer = reqwest::Client::new()
        .get(format!("{}/v1/jobs/900", server.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 500);
    let text = answer.text().await.unwrap();
    assert!(
        text.contains("sealed_value_unreadable") && !text.contains(MRN),
        "{text}"
    );

    server.terminate();
    server.wait_exit(std::time::Duration::from_secs(10));
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains("does not open"))
        .unwrap_or_else(|| panic!("no log line says a value did not open:\n{log}"));
    assert!(line.contains("k1"), "{line}");
    assert!(line.contains("900"), "{line}");
    assert!(!log.contains(MRN) && !log.contains(K1_MATERIAL), "{log}");
}
