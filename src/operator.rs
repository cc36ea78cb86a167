//! The operator's commands beside `serve`: each prints what it did and
//! returns whether it succeeded.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::{Config, Secret};
use crate::signature;
use crate::store::Store;

/// Applies the migrations, then closes the database.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::open(&config.store_options()).await?;
    store.close().await;
    println!("migrations applied to {}", config.database_url);
    Ok(())
}

/// The effective configuration as TOML, secrets shown as `[redacted]`.
pub fn show_config(config: &Config) -> anyhow::Result<String> {
    toml::to_string(config).context("printing the configuration")
}

/// The signature of the file's bytes under the secret in `secret_env`.
pub fn sign_file(secret_env: &str, file: &Path) -> anyhow::Result<String> {
    let secret = secret_from_env(secret_env)?;
    let mut body = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("reading standard input")?;
    } else {
        body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(signature::sign(&secret, &body))
}

pub fn secret_from_env(variable: &str) -> anyhow::Result<Secret> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => bail!("the environment variable {variable} holds no secret"),
    }
}

/// Posts a sample created and a sample failed event with fresh ids; true
/// when both were answered 2xx.
pub async fn send_test_event(url: &str, secret: &Secret) -> anyhow::Result<bool> {
    let client = http_client()?;
    let run = format!(
        "{:x}{:x}",
        OffsetDateTime::now_utc().unix_timestamp_nanos(),
        std::process::id()
    );
    let created = OffsetDateTime::now_utc().format(&Rfc3339)?;
    let events = [
        json!({
            "id": format!("evt_test_{run}_created"),
            "access_token_reference_id": "cobalt-receiver-test",
            "object": "event",
            "created": created,
            "type": "patient_note.created",
            "job_id": format!("test-{run}-1"),
            "data": {
                "patient_note_id": format!("pn_test_{run}"),
                "emr_note_id": format!("emr-test-{run}"),
                "patient_mrn": "TEST-MRN",
                "location_id": "test-location",
                "subject": "cobalt-receiver test event",
                "note": "A test event sent by cobalt-receiver send-test-event; no patient data."
            }
        }),
        json!({
            "id": format!("evt_test_{run}_failed"),
            "access_token_reference_id": "cobalt-receiver-test",
            "object": "event",
            "created": created,
            "type": "patient_note.failed",
            "job_id": format!("test-{run}-2"),
            "data": {
                "patient_note_id": format!("pn_test_{run}"),
                "failure_reason": "Test failure sent by cobalt-receiver send-test-event",
                "reasons": [{ "code": "test", "description": "A test, not a real failure" }]
            }
        }),
    ];
    let mut all_accepted = true;
    for event in events {
        let body = event.to_string();
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header(signature::HEADER, signature::sign(secret, body.as_bytes()))
            .header("webhook-id", event["id"].as_str().unwrap_or_default())
            .header("webhook-attempt", "1")
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting to {url}"))?;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        println!(
            "{} {}: {status} {answer}",
            event["type"].as_str().unwrap_or_default(),
            event["id"].as_str().unwrap_or_default()
        );
        all_accepted &= status.is_success();
    }
    Ok(all_accepted)
}

/// Whether `url` answers 200.
pub async fn healthcheck(url: &str, insecure: bool) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .danger_accept_invalid_certs(insecure)
        .build();
    let Ok(client) = client else {
        return false;
    };
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => true,
        Ok(response) => {
            eprintln!("{url}: {}", response.status());
            false
        }
        Err(error) => {
            eprintln!("{url}: {error}");
            false
        }
    }
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}
