//! The operator's commands, run as the compiled binary.

use crate::helpers::*;
use crate::process::*;

/// Runs the binary off the async runtime, so an in-process server can
/// answer it.
async fn run_blocking(env: Vec<(&'static str, String)>, args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let dir = workspace();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, output) = run(&dir, &env, &args);
        (status.code().unwrap_or(-1), output)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_needs_nothing_but_the_database() {
    let dir = workspace();
    // No webhook secret, no token: migrating needs neither.
    let (status, output) = run(&dir, &[], &["migrate"]);
    assert!(status.success(), "{output}");
    assert!(output.contains("migrations applied"), "{output}");
    let db = dir.sql().await;
    let applied: i64 =
        sqlx::query_scalar("select count(*) from _sqlx_migrations where success = true")
            .fetch_one(&db)
            .await
            .unwrap();
    let folder = match dir.engine() {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    let files = std::fs::read_dir(format!(
        "{}/migrations/{folder}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .count();
    assert_eq!(applied as usize, files);
}

#[test]
fn check_config_prints_the_effective_configuration_without_secrets() {
    let dir = workspace();
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
    // Tokens by name and permissions; a weak one is named, never shown.
    assert!(
        output.contains("api_tokens = [\"token-1:read:[redacted]\"]"),
        "{output}"
    );
    let weak: Vec<&str> = output.lines().filter(|l| l.contains("is weak")).collect();
    assert_eq!(
        weak,
        ["warning: the API token `token-1` is weak: it is shorter than 32 characters; replace it"],
        "{output}"
    );
    assert!(
        !output.contains(SECRET) && !output.contains(TOKEN),
        "{output}"
    );

    // Without a secret the configuration is still shown, with a warning
    // that `serve` would refuse it.
    let (status, output) = run(&dir, &[], &["check-config"]);
    assert!(status.success(), "{output}");
    assert!(output.contains("write_batch_size = 256"), "{output}");
    assert!(
        output.contains("warning: configuration key `webhook_secrets`"),
        "{output}"
    );

    // A configuration that cannot be used is exit 2.
    let env = [("COBALT_RECEIVER_WRITE_BATCH_SIZE", "many")];
    let (status, output) = run(&dir, &env, &["check-config"]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert_eq!(
        output.trim(),
        "error: configuration key `write_batch_size` (from COBALT_RECEIVER_WRITE_BATCH_SIZE): must be a whole number"
    );
}

#[test]
fn a_refused_key_names_where_its_value_came_from() {
    let dir = workspace();
    let bad_token = "front desk:read:tok_0123456789abcdef0123456789abcdef";
    let refusal = "a token's name may hold only letters, digits, `-`, `_` and `.`";
    let check = |env: &[(&str, &str)], args: &[&str], expected: String| {
        let (status, output) = run(&dir, env, args);
        assert_eq!(status.code(), Some(2), "{output}");
        assert_eq!(output.trim(), expected);
    };
    check(
        &[("COBALT_RECEIVER_API_TOKENS", bad_token)],
        &["check-config"],
        format!(
            "error: configuration key `api_tokens` (from COBALT_RECEIVER_API_TOKENS): {refusal}"
        ),
    );
    let file = dir.path().join("receiver.toml");
    std::fs::write(&file, format!("api_tokens = [\"{bad_token}\"]\n")).unwrap();
    let path = file.to_str().unwrap();
    check(
        &[],
        &["--config", path, "check-config"],
        format!("error: configuration key `api_tokens` (in {path}): {refusal}"),
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{bad_token}\n")).unwrap();
    check(
        &[("COBALT_RECEIVER_API_TOKENS_FILE", tokens.to_str().unwrap())],
        &["check-config"],
        format!(
            "error: configuration key `api_tokens` (from COBALT_RECEIVER_API_TOKENS_FILE): {refusal}"
        ),
    );
    // A rule of the configuration's own, broken by the environment.
    check(
        &[("COBALT_RECEIVER_TLS_CERT_PATH", "cert.pem")],
        &["--config", path, "check-config"],
        "error: configuration key `tls_key_path`: is needed with tls_cert_path".into(),
    );
}

#[test]
fn sign_prints_the_signature_cobalt_would_send() {
    let dir = workspace();
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/signature-vectors.json")).unwrap();
    let vector = &vectors["vectors"][0];
    let secret = vectors["secret"].as_str().unwrap();
    let expected = vector["signature"].as_str().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, vector["body"].as_str().unwrap()).unwrap();
    let body = body.to_str().unwrap();

    let env = [("TEST_WEBHOOK_SECRET", secret)];
    let (status, output) = run(
        &dir,
        &env,
        &["sign", "--secret-env", "TEST_WEBHOOK_SECRET", body],
    );
    assert!(status.success(), "{output}");
    assert_eq!(output.trim(), expected);

    // Without --secret-env: the configuration's first webhook secret.
    let secrets = format!("{secret},{ROTATED_SECRET}");
    let env = [("COBALT_RECEIVER_WEBHOOK_SECRETS", secrets.as_str())];
    let (status, output) = run(&dir, &env, &["sign", body]);
    assert!(status.success(), "{output}");
    assert_eq!(output.trim(), expected);

    let (status, output) = run(
        &dir,
        &[],
        &["sign", "--secret-env", "NO_SUCH_VARIABLE", body],
    );
    assert_eq!(status.code(), Some(1));
    assert!(output.contains("NO_SUCH_VARIABLE"), "{output}");

    // Nothing to sign with at all: a configuration problem.
    let (status, output) = run(&dir, &[], &["sign", body]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.starts_with("error: no webhook secret"), "{output}");
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

    // Without --secret-env it signs with the configuration's first secret;
    // without --url it sends to the configured listen address.
    let listen = app.address.trim_start_matches("http://").to_owned();
    let (status, output) = run_blocking(
        vec![
            ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET.to_owned()),
            ("COBALT_RECEIVER_LISTEN", listen),
        ],
        vec!["send-test-event".into()],
    )
    .await;
    assert_eq!(status, 0, "{output}");
    assert_eq!(output.matches("200 OK").count(), 2, "{output}");
    // A base URL is sent to its webhook route.
    let (status, output) = run_blocking(
        vec![("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET.to_owned())],
        vec![
            "send-test-event".into(),
            "--url".into(),
            app.address.clone(),
        ],
    )
    .await;
    assert_eq!(status, 0, "{output}");
    assert_eq!(output.matches("200 OK").count(), 2, "{output}");
    assert_eq!(app.count("events").await, 6);

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
async fn healthcheck_probes_the_configured_address_and_exits_0_only_when_ready() {
    let app = spawn_app().await;
    let listen = app.address.trim_start_matches("http://").to_owned();
    let probe = |env: Vec<(&'static str, String)>, args: &[&str]| {
        let mut all = vec!["healthcheck".to_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        run_blocking(env, all)
    };
    // No --url: /readyz on the configured listen address. No secret needed.
    let (status, output) = probe(vec![("COBALT_RECEIVER_LISTEN", listen.clone())], &[]).await;
    assert_eq!(status, 0, "{output}");
    // A base URL is probed at its /readyz; a full one as given.
    for url in [app.address.clone(), format!("{}/readyz", app.address)] {
        let (status, output) = probe(vec![], &["--url", &url]).await;
        assert_eq!(status, 0, "{url}: {output}");
    }
    // A route that is not 200 fails the probe.
    let (status, output) = probe(vec![], &["--url", &format!("{}/nowhere", app.address)]).await;
    assert_eq!(status, 1, "{output}");
    assert!(output.contains("answered 404"), "{output}");

    app.stop().await;
    let (status, output) = probe(vec![("COBALT_RECEIVER_LISTEN", listen.clone())], &[]).await;
    assert_eq!(status, 1, "{output}");
    assert_eq!(
        output.trim(),
        format!("error: http://{listen}/readyz: connection refused")
    );
}

/// The error line of a failed command: the only line of its output that
/// says `error`, and its last.
fn the_error_line(output: &str) -> &str {
    let errors: Vec<_> = output
        .lines()
        .filter(|line| line.to_lowercase().contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {output}");
    assert_eq!(output.lines().last(), Some(errors[0]), "{output}");
    errors[0]
}

#[test]
fn a_database_that_cannot_be_opened_is_one_error_line_naming_path_and_cause() {
    let dir = workspace();
    let folder = dir.path().join("no-such-folder");
    let url = format!("sqlite://{}/receiver.db", folder.display());
    let env = [("COBALT_RECEIVER_DATABASE_URL", url.as_str())];
    for args in [&["migrate"][..], &["serve"]] {
        let mut env = env.to_vec();
        env.extend(TEST_ENV);
        let (status, output) = run(&dir, &env, args);
        assert_eq!(status.code(), Some(1), "{args:?}: {output}");
        assert_eq!(
            the_error_line(&output),
            format!(
                "error: cannot open the database {}/receiver.db: the folder {} does not exist",
                folder.display(),
                folder.display()
            )
        );
    }

    if !running_as_root("a_database_that_cannot_be_opened_is_one_error_line_naming_path_and_cause")
    {
        return;
    }
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let _immutable = Immutable::set(vec![locked.clone()]);
    let url = format!("sqlite://{}/receiver.db", locked.display());
    let (status, output) = run(
        &dir,
        &[("COBALT_RECEIVER_DATABASE_URL", &url)],
        &["migrate"],
    );
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(
        the_error_line(&output),
        format!(
            "error: cannot open the database {}/receiver.db: permission denied",
            locked.display()
        )
    );
}

#[test]
fn a_port_in_use_is_one_error_line_and_exit_1() {
    let dir = workspace();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut env = TEST_ENV.to_vec();
    env.push(("COBALT_RECEIVER_LISTEN", &address));
    let (status, output) = run(&dir, &env, &["serve"]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(
        output.trim(),
        format!("error: cannot listen on {address}: the address is already in use")
    );
}

/// `?sslmode=require` encrypts the connection to PostgreSQL; a certificate
/// that cannot be verified under `verify-full` is one clear error line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_encrypts_and_a_failed_verification_is_one_line() {
    if !runs_on(
        Engine::Postgres,
        "postgres_sslmode_encrypts_and_a_failed_verification_is_one_line",
    ) {
        return;
    }
    let dir = std::sync::Arc::new(workspace_on(Engine::Postgres));
    let db = dir.sql().await;
    let ssl: String = sqlx::query_scalar("show ssl").fetch_one(&db).await.unwrap();
    if ssl != "on" {
        skipped(
            "postgres_sslmode_encrypts_and_a_failed_verification_is_one_line: the PostgreSQL server has ssl = off",
        );
        return;
    }
    let url = format!("{}?sslmode=require", dir.database_url());
    let app = spawn_app_in(dir.clone(), |config| config.database_url = url).await;
    let body = created_event("evt_tls", "tls-1", "pn-tls", "2025-10-09T10:00:00Z").to_string();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let encrypted: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_ssl join pg_stat_activity using (pid)
         where application_name = 'cobalt-receiver' and datname = current_database() and ssl",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(encrypted >= 1, "no encrypted connection of the service");

    let url = format!("{}?sslmode=verify-full", dir.database_url());
    let (status, output) = run(
        &dir,
        &[("COBALT_RECEIVER_DATABASE_URL", &url)],
        &["migrate"],
    );
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(output.trim().lines().count(), 1, "{output}");
    assert!(output.contains("certificate"), "{output}");
}

/// A secret store mounts the database URL (with its password) as a file;
/// check-config shows the URL without the password.
#[tokio::test]
async fn the_database_url_comes_from_a_file_and_is_printed_without_its_password() {
    let dir = workspace();
    let url = match dir.engine() {
        // Trust authentication ignores it; a real server would check it.
        Engine::Postgres => {
            dir.database_url()
                .replacen("postgres@", "postgres:pw-not-a-secret@", 1)
        }
        Engine::Sqlite => dir.database_url().to_owned(),
    };
    let file = dir.path().join("database-url");
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let env = [
        (
            "COBALT_RECEIVER_DATABASE_URL",
            "sqlite:///nonexistent/folder/x.db",
        ),
        ("COBALT_RECEIVER_DATABASE_URL_FILE", file.to_str().unwrap()),
        ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
    ];
    let (status, output) = run(&dir, &env, &["check-config"]);
    assert!(status.success(), "{output}");
    assert!(!output.contains("pw-not-a-secret"), "{output}");
    let shown = url.replace("pw-not-a-secret", "[redacted]");
    assert!(
        output.contains(&format!("database_url = \"{shown}\"")),
        "{output}"
    );

    let (status, output) = run(&dir, &env, &["migrate"]);
    assert!(status.success(), "{output}");
    assert!(!output.contains("pw-not-a-secret"), "{output}");
}

/// On PostgreSQL without recovery, check-config says what an outage costs;
/// with Cobalt's credentials (recovery on), it does not. SQLite is a
/// single process whose database is a local file: no such warning.
#[test]
fn check_config_warns_that_an_outage_loses_deliveries_without_recovery() {
    let dir = workspace();
    let outage = "deliveries refused while the database is unavailable are lost for good";
    for (url, credentials, warned) in [
        ("postgres://u@db/receiver", false, true),
        ("postgres://u@db/receiver", true, false),
        ("sqlite://receiver.db", false, false),
    ] {
        let mut env = vec![
            ("COBALT_RECEIVER_DATABASE_URL", url),
            ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
        ];
        if credentials {
            env.extend([
                ("COBALT_RECEIVER_COBALT_CLIENT_ID", "ci_test"),
                ("COBALT_RECEIVER_COBALT_CLIENT_SECRET", "cs_test"),
                ("COBALT_RECEIVER_COBALT_ACCESS_TOKEN", "at_test"),
            ]);
        }
        let (status, output) = run(&dir, &env, &["check-config"]);
        assert!(status.success(), "{output}");
        assert_eq!(
            output.contains(outage),
            warned,
            "{url} {credentials}: {output}"
        );
    }
}
