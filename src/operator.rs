//! The operator's commands beside `serve`: each prints what it did and
//! returns whether it succeeded.

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::ApiTokens;
use crate::config::Config;
use crate::os_error;
use crate::secret::Secret;
use crate::signature;
use crate::store::{Engine, Store, copy};

/// Applies the migrations, then closes the database.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = Store::open(&config.store_options()).await?;
    store.close().await;
    println!(
        "migrations applied to {}",
        config.store_options().location()
    );
    Ok(())
}

/// Copies the SQLite database `file` into the configured PostgreSQL
/// database, showing progress on a terminal, then prints a table of the
/// rows of each kind copied and skipped.
pub async fn copy_from_sqlite(config: &Config, file: &Path) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};

    if Engine::of(&config.database_url) != Some(Engine::Postgres) {
        bail!("copy-from-sqlite copies into PostgreSQL: set database_url to a postgres:// URL");
    }
    let target = config.store_options().location();
    let terminal = std::io::stderr().is_terminal();
    let mut shown = 0;
    let copied = copy::sqlite_to_postgres(file, &config.database_url, |done, total| {
        // On a terminal, one line rewritten in place; otherwise a line
        // every tenth of the way.
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if terminal {
            eprint!("\rcopying events: {done} of {total} ({percent}%)");
            let _ = std::io::stderr().flush();
        } else if percent >= shown {
            eprintln!("copying events: {done} of {total} ({percent}%)");
            shown = percent + 10;
        }
    })
    .await?;
    if terminal {
        eprintln!();
    }
    println!("copied {} into {target}:", file.display());
    println!(
        "{:<20} {:>10} {:>10} {:>10}",
        "rows", "in SQLite", "copied", "skipped"
    );
    for (kind, tally) in copied.kinds() {
        println!(
            "{kind:<20} {:>10} {:>10} {:>10}",
            tally.read,
            tally.copied,
            tally.skipped()
        );
    }
    println!("skipped: already there (jobs: there with the same or a higher-ranked state)");
    if copied.feed == copy::FeedCopy::KeptOwn {
        println!(
            "kept PostgreSQL's own change feed, since it has one: consumers of SQLite's \
             feed read PostgreSQL's again without a cursor (from its oldest change)"
        );
    }
    match copied.cursor_key {
        copy::CursorKey::Taken => {
            println!("took SQLite's cursor key: restart any replica already running on {target}")
        }
        copy::CursorKey::KeptOwn => println!(
            "kept PostgreSQL's own cursor key, since it has served: cursors and \
             idempotency keys issued on SQLite are not accepted there"
        ),
        copy::CursorKey::Same => {}
    }
    Ok(())
}

/// Re-seals every stored MRN and payload under the first of
/// `encryption_keys` (see `rotation`), showing progress on a terminal,
/// then prints what it did.
pub async fn rotate_keys(config: &Config, wait: Duration) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};

    if config.keyring.is_empty() {
        bail!(
            "encryption_keys is empty: list the new key first and the keys in use after it (cobalt-receiver generate-key ID makes one)"
        );
    }
    let store = Store::open(&config.store_options()).await?;
    let terminal = std::io::stderr().is_terminal();
    let rotated = crate::rotation::rotate(&store, wait, |progress| match progress {
        crate::rotation::Progress::Resealed { mrns, payloads } if terminal => {
            eprint!("\rre-sealed: {mrns} MRNs, {payloads} payloads");
            let _ = std::io::stderr().flush();
        }
        crate::rotation::Progress::Resealed { .. } => {}
        crate::rotation::Progress::Waiting {
            key_id,
            seen_secs_ago,
        } => eprintln!(
            "{}waiting: a running process recorded sealing under key id {key_id} {seen_secs_ago} s ago",
            if terminal { "\n" } else { "" }
        ),
    })
    .await;
    store.close().await;
    if terminal {
        eprintln!();
    }
    let rotated = rotated?;
    println!(
        "sealed under key id {}: {} MRNs and {} payloads re-sealed ({} and {} rewritten by deliveries meanwhile, under their own keys)",
        rotated.sealing_id,
        rotated.mrns.resealed,
        rotated.payloads.resealed,
        rotated.mrns.changed_meanwhile,
        rotated.payloads.changed_meanwhile,
    );
    if rotated.retired.is_empty() {
        println!("no other key id was in use");
    } else {
        println!(
            "no value is sealed under {} any more: remove {} from encryption_keys",
            rotated.retired.join(", "),
            if rotated.retired.len() == 1 {
                "it"
            } else {
                "them"
            }
        );
    }
    Ok(())
}

/// Runs one recovery sweep and prints its report as JSON. Returns whether
/// it ran without errors.
pub async fn reconcile(
    config: &Config,
    job_ids: Vec<String>,
    since: Option<&str>,
) -> anyhow::Result<bool> {
    let Some(credentials) = crate::cobalt::Credentials::from_config(config) else {
        bail!(
            "recovery needs Cobalt's API credentials: set cobalt_client_id, cobalt_client_secret and cobalt_access_token"
        );
    };
    let since = since
        .map(|text| {
            crate::routes::submissions::parse_day(text)
                .ok_or_else(|| anyhow::anyhow!("--since must be a date, YYYY-MM-DD"))
        })
        .transpose()?;
    let client = std::sync::Arc::new(crate::cobalt::Client::new(config, credentials)?);
    let store = Store::open(&config.store_options()).await?;
    let reconciler = crate::reconcile::Reconciler::new(
        store.clone(),
        client,
        config.overdue_after(),
        config.reconcile_max_jobs,
        config.reconcile_lookback_days,
    );
    let report = reconciler
        .sweep(&crate::reconcile::Scope {
            job_ids: (!job_ids.is_empty()).then_some(job_ids),
            since,
        })
        .await;
    store.close().await;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.errors.is_empty())
}

/// The effective configuration as TOML, secrets shown as `[redacted]` and
/// API tokens by name and permissions (`clinic-app:read+submit:[redacted]`).
pub fn show_config(config: &Config) -> anyhow::Result<String> {
    // Through serde_json's map, which keeps the schema's key order
    // (preserve_order); toml's own table would sort the keys.
    let mut shown = serde_json::to_value(config).context("printing the configuration")?;
    let keys = shown
        .as_object_mut()
        .context("printing the configuration")?;
    // TOML has no null: an unset optional key is left out, as toml does.
    keys.retain(|_, value| !value.is_null());
    let tokens: Vec<String> = ApiTokens::new(&config.api_tokens)
        .described()
        .into_iter()
        .map(|(name, permissions)| format!("{name}:{permissions}:[redacted]"))
        .collect();
    keys.insert("api_tokens".into(), json!(tokens));
    toml::to_string(&shown).context("printing the configuration")
}

/// The signature of the file's bytes under `secret`.
pub fn sign_file(secret: &Secret, file: &Path) -> anyhow::Result<String> {
    let mut body = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut body).map(drop)
    } else {
        std::fs::read(file).map(|bytes| body = bytes)
    };
    read.map_err(|e| anyhow!("cannot read {}: {}", file.display(), os_error::describe(&e)))?;
    Ok(signature::sign(secret, &body))
}

pub fn secret_from_env(variable: &str) -> anyhow::Result<Secret> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => bail!("the environment variable {variable} holds no secret"),
    }
}

/// Posts a sample created and a sample failed event with fresh ids; true
/// when both were answered 2xx.
pub async fn send_test_event(url: &str, secret: &Secret, insecure: bool) -> anyhow::Result<bool> {
    let client = http_client(insecure)?;
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
            .map_err(|e| unreachable(url, &e))?;
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

/// Probes `url`: Ok when it answers 200, else why not.
pub async fn healthcheck(url: &str, insecure: bool) -> anyhow::Result<()> {
    let response = http_client(insecure)?
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(url, &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The receiver's error answers say why in `detail`.
    let detail = response
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|body| body["detail"].as_str().map(|d| format!(": {d}")))
        .unwrap_or_default();
    bail!("{url} answered {status}{detail}")
}

/// The URL a command calls for `--url`: as given, with `path` added to a
/// bare base such as `http://127.0.0.1:8080` (`/readyz` for `healthcheck`,
/// the webhook route for `send-test-event`).
pub fn url_or_base(given: &str, path: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(given).map_err(|e| anyhow!("--url {given}: {e}"))?;
    if url.path() == "/" {
        url.set_path(path);
    }
    Ok(url.to_string())
}

/// The URL a command calls by default: `path` on the configured listen
/// address, in the scheme the server speaks there.
pub fn local_url(config: &Config, path: &str) -> String {
    let mut address = config.listen;
    // A server on every address answers on the loopback one.
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{}://{address}{path}", config.scheme())
}

/// A request that got no answer, with the cause in plain words.
fn unreachable(url: &str, error: &reqwest::Error) -> anyhow::Error {
    anyhow!(
        "{url}: {}",
        crate::request_error::describe(error, CLIENT_TIMEOUT)
    )
}

/// How long an operator command waits for the receiver's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator commands' HTTP client; `insecure` skips certificate checks
/// (for a receiver probed on its local address, whose certificate names
/// its public host).
fn http_client(insecure: bool) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .danger_accept_invalid_certs(insecure)
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::webhooks::PATH as WEBHOOK_PATH;

    #[test]
    fn a_bare_base_url_gets_the_command_s_path() {
        for (given, path, called) in [
            (
                "http://127.0.0.1:8080",
                "/readyz",
                "http://127.0.0.1:8080/readyz",
            ),
            (
                "http://127.0.0.1:8080/",
                "/readyz",
                "http://127.0.0.1:8080/readyz",
            ),
            ("https://host:9/readyz", "/readyz", "https://host:9/readyz"),
            ("http://host/healthz", "/readyz", "http://host/healthz"),
            ("https://host", WEBHOOK_PATH, "https://host/webhooks/cobalt"),
            ("http://host:1/hooks", WEBHOOK_PATH, "http://host:1/hooks"),
        ] {
            assert_eq!(url_or_base(given, path).unwrap(), called);
        }
        assert!(url_or_base("127.0.0.1:8080", "/readyz").is_err());
    }

    #[test]
    fn the_default_probe_follows_the_configured_listen_address_and_scheme() {
        let mut config = Config {
            listen: "0.0.0.0:9443".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(
            local_url(&config, "/readyz"),
            "http://127.0.0.1:9443/readyz"
        );
        config.listen = "[::]:80".parse().unwrap();
        config.tls_cert_path = Some("cert.pem".into());
        assert_eq!(local_url(&config, "/readyz"), "https://[::1]:80/readyz");
        config.listen = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(
            local_url(&config, WEBHOOK_PATH),
            "https://10.1.2.3:8080/webhooks/cobalt"
        );
    }

    #[test]
    fn the_printed_configuration_keeps_the_key_order_and_names_tokens() {
        let config = Config {
            api_tokens: vec![Secret::new("clinic-app:submit+read:tok_never_shown")],
            tls_cert_path: Some("c.pem".into()),
            tls_key_path: Some("k.pem".into()),
            cobalt_client_id: Some(Secret::new("ci_never_shown")),
            console_listen: Some("127.0.0.1:8081".parse().unwrap()),
            ..Config::default()
        };
        let shown = show_config(&config).unwrap();
        let direct = toml::to_string(&config).unwrap().replace(
            r#"api_tokens = ["[redacted]"]"#,
            r#"api_tokens = ["clinic-app:read+submit:[redacted]"]"#,
        );
        assert_eq!(shown, direct);
        assert!(!shown.contains("never_shown"), "{shown}");
    }
}
