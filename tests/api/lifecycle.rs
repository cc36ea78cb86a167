//! The binary itself: configuration, logs, and shutdown. These start the
//! compiled `cobalt-receiver` as a child process.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::process::*;

#[tokio::test]
async fn patient_data_never_reaches_the_text_logs() {
    let log = log_of_every_kind_of_delivery("text").await;
    assert!(log.contains("DEBUG"), "debug logging was not on");
    // Outcomes in the API's words, not Rust's debug forms.
    assert!(log.contains(r#"outcome="applied""#), "{log}");
    assert!(
        log.contains(r#"outcome="duplicate" original_outcome="applied""#),
        "{log}"
    );
    assert!(
        !log.contains("New(") && !log.contains("Duplicate("),
        "{log}"
    );
}

#[tokio::test]
async fn patient_data_never_reaches_the_json_logs() {
    let log = log_of_every_kind_of_delivery("json").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    // Each request's completion carries its id, route, status and latency.
    let finished = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "finished processing request"
                && l["span"]["route"] == "/webhooks/cobalt"
        })
        .expect("a finished request is logged");
    assert!(
        finished["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{finished}"
    );
    assert!(
        finished["fields"]["status"].is_number() && finished["fields"]["latency_ms"].is_f64(),
        "{finished}"
    );
    // Latencies are whole microseconds, not a float's noise.
    for line in &lines {
        if let Some(ms) = line["fields"]["latency_ms"].as_f64() {
            let text = ms.to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 3, "{line}");
        }
    }
    let recorded: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "event recorded")
        .map(|l| l["fields"]["outcome"].as_str().unwrap())
        .collect();
    assert!(
        recorded.contains(&"applied") && recorded.contains(&"duplicate"),
        "{recorded:?}"
    );

    // The first line says what runs, with counts in place of secrets.
    let first = &lines[0]["fields"];
    assert_eq!(first["message"], "starting cobalt-receiver", "{first}");
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        first["listen"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{first}"
    );
    // Where the data is, never the credentials.
    let database = first["database"].as_str().unwrap();
    let expected = match engine() {
        Engine::Sqlite => database.ends_with("/receiver.db"),
        Engine::Postgres => {
            database.starts_with("postgres://127.0.0.1:") && !database.contains('@')
        }
    };
    assert!(expected, "{first}");
    assert_eq!(first["webhook_secrets"], 1, "{first}");
    assert_eq!(first["api_tokens"], 1, "{first}");
    assert_eq!(first["payload_retention"], "30 days", "{first}");
    assert_eq!(
        first["cobalt"], "no credentials: submission and recovery are off",
        "{first}"
    );
}

/// Runs every kind of delivery past a server logging at debug level in
/// `format`, and returns its log after checking that it holds no patient
/// data and no secret.
async fn log_of_every_kind_of_delivery(format: &str) -> String {
    let dir = workspace();
    let mut env = TEST_ENV.to_vec();
    env.push(("RUST_LOG", "debug"));
    env.push(("COBALT_RECEIVER_LOG_FORMAT", format));
    let mut server = start(&dir, &env, &[]);
    let mut reasons = Vec::new();

    // Every path a delivery can take, each carrying patient data.
    let created = created_event("evt_phi_1", "500", "pn-500", "2025-10-09T10:00:00Z");
    let mut misplaced = created_event("evt_phi_2", "501", "pn-501", "2025-10-09T10:00:00Z");
    misplaced["data"]["emr_note_id"] = json!({ "text": NOTE_TEXT });
    misplaced["created"] = json!(SUBJECT);
    misplaced["job_id"] = json!([MRN]);
    let mut unknown = created.clone();
    unknown["id"] = json!("evt_phi_3");
    unknown["type"] = json!("note.uploaded");
    let truncated =
        format!(r#"{{"id":"evt_phi_4","data":{{"note":"{NOTE_TEXT}","patient_mrn":"{MRN}""#);
    let bodies = [
        created.to_string(),
        created.to_string(),
        misplaced.to_string(),
        unknown.to_string(),
        failed_event("evt_phi_5", "500", "pn-500", "2025-10-09T10:01:00Z").to_string(),
        truncated,
    ];
    for body in &bodies {
        let response = server.post(body.as_bytes(), &sign(body.as_bytes())).await;
        assert!(response.status().as_u16() < 500);
        assert!(!response.text().await.unwrap().contains(NOTE_TEXT));
    }
    // A 401 is logged with its reason, never with the header's value.
    let wrong_secret = sign_with("whsec_test_not_configured", created.to_string().as_bytes());
    for (signature, reason) in [
        (None, "the cobalt-verification header is missing"),
        (
            Some("zz-not-hex-SIGNATURE-VALUE"),
            "is not 64 hexadecimal characters",
        ),
        (
            Some(wrong_secret.as_str()),
            "matches no active webhook secret",
        ),
    ] {
        let mut request = reqwest::Client::new()
            .post(format!("{}/webhooks/cobalt", server.address))
            .body(created.to_string());
        if let Some(signature) = signature {
            request = request.header("cobalt-verification", signature);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
        reasons.push(reason);
    }
    let oversized = format!(
        r#"{{"id":"evt_phi_6","note":"{NOTE_TEXT}","pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(
        server
            .post(oversized.as_bytes(), &sign(oversized.as_bytes()))
            .await
            .status(),
        413
    );
    for path in [
        "/v1/jobs/500",
        "/v1/jobs/500/events",
        "/v1/patient-notes/pn-500",
        "/v1/patient-notes?status=created",
    ] {
        assert_eq!(server.get(path, TOKEN).await.status(), 200, "{path}");
    }

    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let log = server.log();
    for reason in reasons {
        let refused = log
            .lines()
            .find(|line| line.contains("delivery refused") && line.contains(reason))
            .unwrap_or_else(|| panic!("no 401 line says {reason}: {log}"));
        assert!(refused.contains("WARN") || refused.contains(r#""level":"WARN""#));
    }
    assert!(
        !log.contains("zz-not-hex-SIGNATURE-VALUE") && !log.contains(&wrong_secret),
        "the log carries a signature header"
    );
    // The capture is real: requests, their ids and outcomes were logged.
    assert!(
        log.contains("event recorded") && log.contains("request_id"),
        "{log}"
    );
    assert!(
        log.to_lowercase().contains("debug"),
        "debug logging was not on"
    );
    for phi in [NOTE_TEXT, SUBJECT, MRN] {
        assert!(!log.contains(phi), "the log carries patient data ({phi})");
    }
    for secret in [SECRET, TOKEN] {
        assert!(!log.contains(secret), "the log carries a secret");
    }
    log
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let dir = workspace();
    let mut server = start(&dir, &TEST_ENV, &["serve"]);
    let body = created_event("evt_inflight", "600", "pn-600", "2025-10-09T10:00:00Z").to_string();
    let (head, tail) = body.split_at(body.len() / 2);

    let address = server.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /webhooks/cobalt HTTP/1.1\r\nhost: {address}\r\ncobalt-verification: {}\r\ncontent-length: {}\r\n\r\n{head}",
        sign(body.as_bytes()),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""status":"applied""#), "{answer}");

    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    // The acknowledged event is in the file the server closed.
    let server = start(&dir, &TEST_ENV, &[]);
    assert_eq!(server.get("/v1/jobs/600", TOKEN).await.status(), 200);
}

#[tokio::test]
async fn the_environment_configures_the_server() {
    let dir = workspace();
    let env = [
        (
            "COBALT_RECEIVER_WEBHOOK_SECRETS",
            "whsec_test_env_one, whsec_test_env_two",
        ),
        ("COBALT_RECEIVER_API_TOKENS", "token-env-one,token-env-two"),
        // What Kubernetes sets in every pod for a Service of this name.
        ("COBALT_RECEIVER_SERVICE_HOST", "10.96.0.12"),
        ("COBALT_RECEIVER_SERVICE_PORT_HTTP", "80"),
        ("COBALT_RECEIVER_PORT", "tcp://10.96.0.12:80"),
        ("COBALT_RECEIVER_PORT_80_TCP_ADDR", "10.96.0.12"),
    ];
    let server = start(&dir, &env, &["serve"]);
    let body = created_event("evt_env", "700", "pn-700", "2025-10-09T10:00:00Z").to_string();
    let response = server
        .post(
            body.as_bytes(),
            &sign_with("whsec_test_env_two", body.as_bytes()),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        server.get("/v1/jobs/700", "token-env-two").await.status(),
        200
    );
    assert_eq!(server.get("/v1/jobs/700", TOKEN).await.status(), 401);
    assert_eq!(
        dir.count("events").await,
        1,
        "stored in the configured database"
    );
}

#[tokio::test]
async fn the_example_config_runs_with_the_environment_on_top() {
    let dir = workspace();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let server = start(&dir, &[], &["--config", example.to_str().unwrap()]);
    assert_eq!(server.get("/readyz", "").await.status(), 200);
    let body = created_event("evt_example", "701", "pn-701", "2025-10-09T10:00:00Z").to_string();
    let signature = sign_with("whsec_example_not_a_real_secret", body.as_bytes());
    assert_eq!(server.post(body.as_bytes(), &signature).await.status(), 200);
    assert_eq!(
        server
            .get("/v1/jobs/701", "example-token-change-me")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unsigned_mode_must_be_explicit_and_is_warned_about() {
    let dir = workspace();
    let server = start(&dir, &[("COBALT_RECEIVER_ALLOW_UNSIGNED", "true")], &[]);
    assert!(
        server.log().contains("allow_unsigned = true"),
        "{}",
        server.log()
    );
    let body = created_event("evt_u", "702", "pn-702", "2025-10-09T10:00:00Z").to_string();
    assert_eq!(server.post(body.as_bytes(), "").await.status(), 200);
}

#[test]
fn a_bad_configuration_exits_2_with_one_line_naming_the_key() {
    let dir = workspace();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(
        &bad_toml,
        "webhook_secrets = [\"whsec_test_leak\"]\nlisten = [",
    )
    .unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(
        &typo,
        "webhook_secrets = [\"whsec_test_leak\"]\nwebhook_secret = \"whsec_test_leak\"\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.toml");
    // (environment, arguments, what the one line must name)
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], vec![], "webhook_secrets"),
        (
            vec![
                ("COBALT_RECEIVER_WEBHOOK_SECRETS", "whsec_test_leak"),
                ("COBALT_RECEIVER_LISTEN", "nowhere"),
            ],
            vec![],
            "listen",
        ),
        (
            vec![
                ("COBALT_RECEIVER_WEBHOOK_SECRETS", "whsec_test_leak"),
                ("COBALT_RECEIVER_DATABASE_URL", "mysql://x"),
            ],
            vec![],
            "database_url",
        ),
        (
            vec![
                ("COBALT_RECEIVER_WEBHOOK_SECRETS", "whsec_test_leak"),
                ("COBALT_RECEIVER_BODY_LIMIT_BYTES", "lots"),
            ],
            vec![],
            "body_limit_bytes",
        ),
        (
            vec![],
            vec!["--config", typo.to_str().unwrap()],
            "webhook_secret",
        ),
        (
            vec![],
            vec!["--config", bad_toml.to_str().unwrap()],
            "bad.toml",
        ),
        (
            vec![],
            vec!["--config", missing.to_str().unwrap()],
            "does not exist",
        ),
        (
            vec![
                ("COBALT_RECEIVER_WEBHOOK_SECRETS", "whsec_test_leak"),
                ("COBALT_RECEIVER_LOG_FILTER", "[="),
            ],
            vec![],
            "log_filter",
        ),
    ];
    for (env, args, names) in cases {
        let (status, output) = run(&dir, &env, &args);
        assert_eq!(status.code(), Some(2), "{names}: {output}");
        assert_eq!(
            output.trim().lines().count(),
            1,
            "{names}: one line, got {output}"
        );
        assert!(output.contains(names), "{names}: {output}");
        assert!(
            !output.contains("whsec_test_leak"),
            "{names}: the secret leaked: {output}"
        );
    }
}

#[tokio::test]
async fn secrets_and_tokens_come_from_files_and_tokens_as_digests() {
    use sha2::Digest;

    let dir = workspace();
    let secrets = dir.path().join("webhook-secrets");
    std::fs::write(&secrets, "whsec_test_file_one\nwhsec_test_file_two\n").unwrap();
    let tokens = dir.path().join("api-tokens");
    let digest = hex::encode(sha2::Sha256::digest(b"token-from-file"));
    std::fs::write(&tokens, format!("sha256:{digest}\n")).unwrap();
    let env = [
        (
            "COBALT_RECEIVER_WEBHOOK_SECRETS_FILE",
            secrets.to_str().unwrap(),
        ),
        ("COBALT_RECEIVER_API_TOKENS_FILE", tokens.to_str().unwrap()),
    ];
    let server = start(&dir, &env, &[]);
    let body = created_event("evt_files", "710", "pn-710", "2025-10-09T10:00:00Z").to_string();
    let signature = sign_with("whsec_test_file_two", body.as_bytes());
    assert_eq!(server.post(body.as_bytes(), &signature).await.status(), 200);
    assert_eq!(
        server.get("/v1/jobs/710", "token-from-file").await.status(),
        200
    );
    assert_eq!(
        server
            .get("/v1/jobs/710", &format!("sha256:{digest}"))
            .await
            .status(),
        401
    );
    let log = server.log();
    assert!(
        !log.contains("whsec_test_file") && !log.contains("token-from-file"),
        "{log}"
    );
}

#[test]
fn an_unreadable_secrets_file_exits_2_naming_the_variable() {
    let dir = workspace();
    let missing = dir.path().join("no-such-file");
    let env = [(
        "COBALT_RECEIVER_WEBHOOK_SECRETS_FILE",
        missing.to_str().unwrap(),
    )];
    let (status, output) = run(&dir, &env, &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("COBALT_RECEIVER_WEBHOOK_SECRETS_FILE"),
        "{output}"
    );
}

/// Two processes started on one database file by mistake: SQLite's locks
/// let both write, every answer is right, and a duplicate across the two
/// is still a duplicate (docs/operations.md, "Two processes on one database file").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_file_both_answer_correctly() {
    let dir = workspace();
    let servers = [start(&dir, &TEST_ENV, &[]), start(&dir, &TEST_ENV, &[])];
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for n in 0..40u32 {
        let url = format!("{}/webhooks/cobalt", servers[n as usize % 2].address);
        let body = created_event(
            &format!("evt_two_{n}"),
            &format!("two-{n}"),
            "pn-two",
            "2025-10-09T10:00:00Z",
        )
        .to_string();
        let client = client.clone();
        sends.push(tokio::spawn(async move {
            post_signed(&client, &url, body).await
        }));
    }
    for send in sends {
        assert_eq!(send.await.unwrap().status(), 200);
    }
    // The same event to each process: applied once, then a duplicate.
    let body = created_event("evt_two_0", "two-0", "pn-two", "2025-10-09T10:00:00Z").to_string();
    let (_, answer) = json_of(
        servers[1]
            .post(body.as_bytes(), &sign(body.as_bytes()))
            .await,
    )
    .await;
    assert_eq!(answer["status"], "duplicate", "{answer}");

    for server in &servers {
        for n in [0u32, 1, 39] {
            let (status, job) =
                json_of(server.get(&format!("/v1/jobs/two-{n}"), TOKEN).await).await;
            assert_eq!(
                (status.as_u16(), job["status"].as_str()),
                (200, Some("created"))
            );
        }
    }
    assert_eq!(dir.count("events").await, 40);
}
