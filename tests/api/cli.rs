//! The operator's commands, run as the compiled binary.

use tempfile::TempDir;

use crate::helpers::*;
use crate::process::*;

/// Runs the binary off the async runtime, so an in-process server can
/// answer it.
async fn run_blocking(env: Vec<(&'static str, String)>, args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let dir = TempDir::new().unwrap();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, output) = run(&dir, &env, &args);
        (status.code().unwrap_or(-1), output)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_exits() {
    let dir = TempDir::new().unwrap();
    let (status, output) = run(&dir, &TEST_ENV, &["migrate"]);
    assert!(status.success(), "{output}");
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", db_path(&dir).display()))
        .await
        .unwrap();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&db)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files);
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let dir = TempDir::new().unwrap();
    let env = [
        ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
        ("COBALT_RECEIVER_API_TOKENS", TOKEN),
        ("COBALT_RECEIVER_WRITE_BATCH_SIZE", "99"),
    ];
    let (status, output) = run(&dir, &env, &["check-config"]);
    assert!(status.success(), "{output}");
    assert!(output.contains("write_batch_size = 99"), "{output}");
    assert!(output.contains("listen = \"127.0.0.1:0\""), "{output}");
    assert!(output.contains("[redacted]"), "{output}");
    assert!(
        !output.contains(SECRET) && !output.contains(TOKEN),
        "{output}"
    );

    let (status, output) = run(&dir, &[], &["check-config"]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("webhook_secrets"), "{output}");
}

#[test]
fn sign_prints_the_signature_cobalt_would_send() {
    let dir = TempDir::new().unwrap();
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/signature-vectors.json")).unwrap();
    let vector = &vectors["vectors"][0];
    let body = dir.path().join("body.json");
    std::fs::write(&body, vector["body"].as_str().unwrap()).unwrap();
    let env = [("TEST_WEBHOOK_SECRET", vectors["secret"].as_str().unwrap())];
    let (status, output) = run(
        &dir,
        &env,
        &[
            "sign",
            "--secret-env",
            "TEST_WEBHOOK_SECRET",
            body.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{output}");
    assert_eq!(output.trim(), vector["signature"].as_str().unwrap());

    let (status, output) = run(
        &dir,
        &[],
        &[
            "sign",
            "--secret-env",
            "NO_SUCH_VARIABLE",
            body.to_str().unwrap(),
        ],
    );
    assert_eq!(status.code(), Some(1));
    assert!(output.contains("NO_SUCH_VARIABLE"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_event_posts_two_signed_events_and_reports_the_answers() {
    let app = spawn_app().await;
    let url = format!("{}/webhooks/cobalt", app.address);

    let (status, output) = run_blocking(
        vec![("TEST_WEBHOOK_SECRET", SECRET.to_owned())],
        vec![
            "send-test-event".into(),
            "--url".into(),
            url.clone(),
            "--secret-env".into(),
            "TEST_WEBHOOK_SECRET".into(),
        ],
    )
    .await;
    assert_eq!(status, 0, "{output}");
    assert_eq!(output.matches("200 OK").count(), 2, "{output}");
    assert!(
        output.contains("patient_note.created") && output.contains("patient_note.failed"),
        "{output}"
    );
    assert_eq!(app.count("events").await, 2);
    assert_eq!(app.count("jobs").await, 2);

    // Without --secret-env it signs with the configuration's first secret.
    let (status, output) = run_blocking(
        vec![("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET.to_owned())],
        vec!["send-test-event".into(), "--url".into(), url.clone()],
    )
    .await;
    assert_eq!(status, 0, "{output}");

    // A secret the receiver does not know: reported, and a failure.
    let (status, output) = run_blocking(
        vec![("TEST_WEBHOOK_SECRET", "whsec_test_unknown".to_owned())],
        vec![
            "send-test-event".into(),
            "--url".into(),
            url,
            "--secret-env".into(),
            "TEST_WEBHOOK_SECRET".into(),
        ],
    )
    .await;
    assert_eq!(status, 1, "{output}");
    assert!(output.contains("401"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_only_when_the_receiver_is_ready() {
    let app = spawn_app().await;
    let ready = format!("{}/readyz", app.address);
    let (status, output) =
        run_blocking(vec![], vec!["healthcheck".into(), "--url".into(), ready]).await;
    assert_eq!(status, 0, "{output}");

    let stopped = app.address.clone();
    app.stop().await;
    let (status, output) = run_blocking(
        vec![],
        vec![
            "healthcheck".into(),
            "--url".into(),
            format!("{stopped}/readyz"),
        ],
    )
    .await;
    assert_eq!(status, 1, "{output}");
}
