//! HTTPS in the server: a self-signed certificate made at test time, and
//! its renewal served without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Writes a new self-signed certificate for 127.0.0.1 and its key; returns
/// the certificate's PEM.
fn new_certificate(dir: &Path) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let pem = certified.cert.pem();
    // Write the key first: the server reloads once both have changed.
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    pem
}

/// Whether `client` gets a 200 from the server at `https` within `limit`
/// (it fails the TLS handshake until the server offers a certificate it
/// trusts).
async fn served_within(client: &reqwest::Client, https: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{https}/healthz")).send().await {
            return response.status() == 200;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A client that trusts only `pem`.
fn client_trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_server_speaks_https_and_serves_a_renewed_certificate_without_restart() {
    let certs = tempfile::TempDir::new().unwrap();
    let first = new_certificate(certs.path());
    let app = spawn_app_with(|config| {
        config.tls_cert_path = Some(certs.path().join("cert.pem"));
        config.tls_key_path = Some(certs.path().join("key.pem"));
        config.tls_reload_check_secs = 1;
    })
    .await;
    let https = app.address.replace("http://", "https://");

    let client = client_trusting(&first);
    let response = client.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = created_event("evt_tls", "tls1", "pn-tls", "2025-10-09T10:00:00Z").to_string();
    let response = post_signed(&client, &format!("{https}/webhooks/cobalt"), body).await;
    assert_eq!(response.status(), 200);
    // Plain HTTP is not served on an HTTPS port.
    assert!(
        reqwest::get(format!("{}/healthz", app.address))
            .await
            .is_err()
    );

    // The container health probe reaches it on its local address.
    let probe = https.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cobalt-receiver"))
            .args([
                "healthcheck",
                "--insecure",
                "--url",
                &format!("{probe}/readyz"),
            ])
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());

    // A renewal lands on disk; the server picks it up by itself.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = new_certificate(certs.path());
    let renewed = client_trusting(&second);
    assert!(
        served_within(&renewed, &https, Duration::from_secs(10)).await,
        "the renewed certificate was never served"
    );
    // And the old one is no longer offered.
    assert!(
        client_trusting(&first)
            .get(format!("{https}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    use crate::process::{TEST_ENV, start};

    let dir = crate::helpers::workspace();
    let first = new_certificate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut env = TEST_ENV.to_vec();
    env.extend([
        ("COBALT_RECEIVER_TLS_CERT_PATH", cert.to_str().unwrap()),
        ("COBALT_RECEIVER_TLS_KEY_PATH", key.to_str().unwrap()),
        // No periodic check within this test: only the signal can reload.
        ("COBALT_RECEIVER_TLS_RELOAD_CHECK_SECS", "3600"),
    ]);
    let server = start(&dir, &env, &[]);
    let https = server.address.replace("http://", "https://");
    assert_eq!(
        client_trusting(&first)
            .get(format!("{https}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let second = new_certificate(dir.path());
    let renewed = client_trusting(&second);
    assert!(
        renewed
            .get(format!("{https}/healthz"))
            .send()
            .await
            .is_err(),
        "reloaded before the signal"
    );
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(
        served_within(&renewed, &https, Duration::from_secs(5)).await,
        "SIGHUP did not reload the certificate"
    );
}

/// A key file that is not valid PEM stops the start with one error line
/// that says so, and never quotes the file: its lines are the secret key.
#[test]
fn a_malformed_key_is_one_error_line_that_never_quotes_the_key() {
    let dir = crate::helpers::workspace();
    new_certificate(dir.path());
    let key = dir.path().join("key.pem");
    let secret_line = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
    std::fs::write(
        &key,
        format!("-----BEGIN PRIVATE KEY-----\n{secret_line}!\n-----BEGIN X\n"),
    )
    .unwrap();
    let cert = dir.path().join("cert.pem");
    let mut env = crate::process::TEST_ENV.to_vec();
    env.push(("COBALT_RECEIVER_TLS_CERT_PATH", cert.to_str().unwrap()));
    env.push(("COBALT_RECEIVER_TLS_KEY_PATH", key.to_str().unwrap()));
    let (status, output) = crate::process::run(&dir, &env, &["serve"]);
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(
        output.lines().last().unwrap(),
        format!(
            "error: cannot load the TLS certificate: reading the private key {}: it is not valid PEM",
            key.display()
        )
    );
    assert!(!output.contains(secret_line), "{output}");
}

/// Runs the binary with `args` and `env`; its exit code and its output.
async fn command(env: Vec<(&'static str, String)>, args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cobalt-receiver"))
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tls_failures_of_the_operator_commands_are_told_in_words() {
    let certs = tempfile::TempDir::new().unwrap();
    new_certificate(certs.path());
    let app = spawn_app_with(|config| {
        config.tls_cert_path = Some(certs.path().join("cert.pem"));
        config.tls_key_path = Some(certs.path().join("key.pem"));
    })
    .await;
    let https = app.address.replace("http://", "https://");
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();

    // A self-signed certificate: named as such, with the way around it.
    let (code, output) = command(vec![], args(&["healthcheck", "--url", &https])).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("its certificate is not signed by an authority this machine trusts"),
        "{output}"
    );
    // A base URL and --insecure: the test events reach the webhook route.
    let secret = vec![("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET.to_owned())];
    let (code, output) = command(
        secret.clone(),
        args(&["send-test-event", "--insecure", "--url", &https]),
    )
    .await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(output.matches("200 OK").count(), 2, "{output}");

    // TLS asked of a server that speaks plain HTTP.
    let plain = spawn_app().await;
    let wrong = plain.address.replace("http://", "https://");
    let (code, output) = command(secret, args(&["send-test-event", "--url", &wrong])).await;
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("the server did not answer in TLS"),
        "{output}"
    );
    assert!(!output.contains("InvalidContentType"), "{output}");
}
