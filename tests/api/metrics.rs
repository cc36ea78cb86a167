//! `GET /metrics`: Prometheus text, behind the API tokens, and the counters
//! move with the traffic. Run against the binary, so its recorder holds
//! this test's traffic alone.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::*;
use crate::process::*;
use cobalt_receiver::monitoring::{AuditRows, ListOutcome, RecoveredOutcome, SubmitOutcome};

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(name)
                && labels.iter().all(|label| line.contains(label))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_need_a_token_and_count_what_happened() {
    let dir = workspace();
    let server = start(&dir, &TEST_ENV, &[]);
    assert_eq!(server.get("/metrics", "wrong-token").await.status(), 401);

    let created = created_event("evt_m1", "m1", "pn-m", "2025-10-09T10:00:00Z").to_string();
    let mut incomplete = created_event("evt_m2", "m2", "pn-m", "2025-10-09T10:00:00Z");
    incomplete["data"]
        .as_object_mut()
        .unwrap()
        .remove("emr_note_id");
    let incomplete = incomplete.to_string();
    let failed = failed_event("evt_m3", "m3", "pn-m", "2025-10-09T10:00:00Z").to_string();
    for body in [&created, &created, &incomplete, &failed] {
        assert!(
            server
                .post(body.as_bytes(), &sign(body.as_bytes()))
                .await
                .status()
                .as_u16()
                < 500
        );
    }
    assert_eq!(
        server
            .post(created.as_bytes(), &"0".repeat(64))
            .await
            .status(),
        401
    );
    assert_eq!(server.get("/v1/jobs/m1", TOKEN).await.status(), 200);

    let response = server.get("/metrics", TOKEN).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();

    let deliveries = "cobalt_receiver_deliveries_total";
    let created_type = r#"type="patient_note.created""#;
    assert_eq!(
        sample(&text, deliveries, &[created_type, r#"outcome="applied""#]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, deliveries, &[created_type, r#"outcome="duplicate""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, deliveries, &[created_type, r#"outcome="rejected""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            deliveries,
            &[r#"type="patient_note.failed""#, r#"outcome="applied""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            deliveries,
            &[r#"type="unknown""#, r#"outcome="unauthorized""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "cobalt_receiver_rejected_events_total",
            &[r#"field="data.emr_note_id""#]
        ),
        Some(1.0)
    );
    let webhook_requests = sample(
        &text,
        "cobalt_receiver_http_request_duration_seconds_count",
        &[r#"route="/webhooks/cobalt""#, r#"status="200""#],
    );
    assert_eq!(webhook_requests, Some(3.0), "{text}");
    assert!(sample(&text, "cobalt_receiver_writer_batch_size_count", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        sample(&text, "cobalt_receiver_writer_commit_seconds_count", &[]).unwrap_or(0.0) >= 1.0
    );
    assert_eq!(
        sample(&text, "cobalt_receiver_jobs", &[r#"status="created""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "cobalt_receiver_jobs", &[r#"status="failed""#]),
        Some(1.0)
    );
    // Patient data never becomes a label.
    assert!(!text.contains(MRN) && !text.contains(NOTE_TEXT));
}

/// An alert on `rate(...)` or `increase(...)` needs its series to exist
/// before the first event, so every counter worth alerting on starts at 0.
#[tokio::test]
async fn alerting_counters_are_exported_at_zero_before_the_first_event() {
    let dir = workspace();
    let server = start(&dir, &TEST_ENV, &[]);
    let text = server.get("/metrics", TOKEN).await.text().await.unwrap();

    let deliveries = "cobalt_receiver_deliveries_total";
    for (event_type, outcome) in [
        ("unknown", "unauthorized"),
        ("unknown", "too_large"),
        ("unknown", "invalid_body"),
        ("patient_note.created", "applied"),
        ("patient_note.created", "rejected"),
        ("patient_note.failed", "duplicate"),
        ("patient_note.failed", "storage_unavailable"),
        ("other", "ignored"),
        ("other", "overloaded"),
    ] {
        let labels = [
            format!(r#"type="{event_type}""#),
            format!(r#"outcome="{outcome}""#),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            sample(&text, deliveries, &labels),
            Some(0.0),
            "{event_type} {outcome}: {text}"
        );
    }
    for field in ["type", "created", "data.emr_note_id", "data.failure_reason"] {
        assert_eq!(
            sample(
                &text,
                "cobalt_receiver_rejected_events_total",
                &[&format!(r#"field="{field}""#)]
            ),
            Some(0.0),
            "{field}: {text}"
        );
    }
    assert_eq!(
        sample(&text, "cobalt_receiver_database_errors_total", &[]),
        Some(0.0),
        "{text}"
    );
    // Every outcome a call to Cobalt can have, `malformed` submissions too.
    let calls = "cobalt_receiver_cobalt_api_calls_total";
    for (call, outcomes) in [
        (
            "submit_note",
            SubmitOutcome::ALL
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "list_events",
            ListOutcome::ALL.iter().map(|o| o.as_str()).collect(),
        ),
    ] {
        for outcome in outcomes {
            let labels = [
                format!(r#"call="{call}""#),
                format!(r#"outcome="{outcome}""#),
            ];
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            assert_eq!(sample(&text, calls, &labels), Some(0.0), "{call} {outcome}");
        }
    }
    assert_eq!(
        sample(
            &text,
            calls,
            &[r#"call="submit_note""#, r#"outcome="malformed""#]
        ),
        Some(0.0)
    );
    for outcome in RecoveredOutcome::ALL {
        let label = format!(r#"outcome="{}""#, outcome.as_str());
        let total = "cobalt_receiver_recovered_events_total";
        assert_eq!(sample(&text, total, &[&label]), Some(0.0), "{label}");
    }
    for outcome in AuditRows::ALL {
        let label = format!(r#"outcome="{}""#, outcome.as_str());
        let total = "cobalt_receiver_audit_rows_total";
        assert_eq!(sample(&text, total, &[&label]), Some(0.0), "{label}");
    }
}

/// Every metric family the service exports, each with its `# TYPE`.
const FAMILIES: &[(&str, &str)] = &[
    ("cobalt_receiver_deliveries_total", "counter"),
    ("cobalt_receiver_rejected_events_total", "counter"),
    ("cobalt_receiver_database_errors_total", "counter"),
    ("cobalt_receiver_audit_rows_total", "counter"),
    ("cobalt_receiver_cobalt_api_calls_total", "counter"),
    ("cobalt_receiver_recovered_events_total", "counter"),
    ("cobalt_receiver_http_request_duration_seconds", "histogram"),
    ("cobalt_receiver_writer_batch_size", "histogram"),
    ("cobalt_receiver_writer_commit_seconds", "histogram"),
    ("cobalt_receiver_jobs", "gauge"),
    ("cobalt_receiver_pending_jobs", "gauge"),
    ("cobalt_receiver_overdue_jobs", "gauge"),
    ("cobalt_receiver_oldest_pending_job_age_seconds", "gauge"),
    ("cobalt_receiver_recovery_sweeps_total", "counter"),
    ("cobalt_receiver_time_to_emr_seconds", "histogram"),
    ("cobalt_receiver_ready", "gauge"),
    ("cobalt_receiver_clinic_open", "gauge"),
];

/// The outgoing webhooks' families, present once an endpoint is configured.
const OUTBOUND_FAMILIES: [(&str, &str); 6] = [
    ("cobalt_receiver_outbound_attempts_total", "counter"),
    ("cobalt_receiver_outbound_messages_total", "counter"),
    ("cobalt_receiver_outbound_queued", "gauge"),
    ("cobalt_receiver_outbound_failed", "gauge"),
    (
        "cobalt_receiver_outbound_oldest_undelivered_age_seconds",
        "gauge",
    ),
    ("cobalt_receiver_outbound_failing_seconds", "gauge"),
];

/// A dashboard or alert finds every family on a fresh server, each with
/// its help text; the histograms are there empty (count and sum 0, not a
/// made-up observation).
#[tokio::test]
async fn every_family_has_help_text_and_is_present_before_the_first_event() {
    let dir = workspace();
    let server = start(&dir, &TEST_ENV, &[]);
    let text = server.get("/metrics", TOKEN).await.text().await.unwrap();

    for (name, kind) in FAMILIES {
        let help = text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("# HELP {name} ")));
        assert!(
            help.is_some_and(|help| !help.trim().is_empty()),
            "{name} has no help text: {text}"
        );
        assert!(
            text.lines()
                .any(|line| line == format!("# TYPE {name} {kind}")),
            "{name} is not a {kind}: {text}"
        );
    }
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    assert_eq!(
        families.len(),
        FAMILIES.len(),
        "a family missing from FAMILIES (and from docs/operations.md?): {families:?}"
    );
    // With an endpoint of outgoing webhooks, its families too, at 0.
    let env = [
        TEST_ENV[0],
        TEST_ENV[1],
        ("COBALT_RECEIVER_OUTBOUND_URL", "http://127.0.0.1:9/hooks"),
        (
            "COBALT_RECEIVER_OUTBOUND_SECRET",
            "whsec_dGVzdC1vdXRib3VuZC1zZWNyZXQtMDAwMDAwMDAw",
        ),
    ];
    let outbound_dir = workspace();
    let outbound = start(&outbound_dir, &env, &[]);
    let with_outbound = outbound.get("/metrics", TOKEN).await.text().await.unwrap();
    for (name, kind) in FAMILIES.iter().chain(&OUTBOUND_FAMILIES) {
        assert!(
            with_outbound
                .lines()
                .any(|line| line.starts_with(&format!("# HELP {name} "))),
            "{name}: {with_outbound}"
        );
        assert!(
            with_outbound
                .lines()
                .any(|line| line == format!("# TYPE {name} {kind}")),
            "{name}: {with_outbound}"
        );
    }
    assert_eq!(
        sample(
            &with_outbound,
            "cobalt_receiver_outbound_messages_total",
            &[r#"endpoint="default""#, r#"outcome="failed""#]
        ),
        Some(0.0),
        "{with_outbound}"
    );
    outbound.terminate();
    for name in [
        "cobalt_receiver_writer_batch_size",
        "cobalt_receiver_writer_commit_seconds",
    ] {
        for part in ["count", "sum"] {
            let series = format!("{name}_{part}");
            assert_eq!(sample(&text, &series, &[]), Some(0.0), "{series}: {text}");
        }
        assert_eq!(
            sample(&text, &format!("{name}_bucket"), &[r#"le="+Inf""#]),
            Some(0.0),
            "{name}: {text}"
        );
    }
}

/// `promtool check metrics` (Prometheus's own linter) has nothing to say
/// about a fresh server's exposition: help text everywhere, names by the
/// conventions. CI installs promtool (ci/promtool.sh); elsewhere the test
/// is skipped, loudly, without it.
#[tokio::test]
async fn promtool_check_metrics_finds_nothing_to_say() {
    let test = "promtool_check_metrics_finds_nothing_to_say";
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut promtool = match promtool {
        Ok(child) => child,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: promtool cannot be run ({why}); ci/promtool.sh installs it, and CI must run this test"
            )
        }
        Err(why) => {
            eprintln!("######################################################################");
            skipped(&format!(
                "{test}: promtool cannot be run ({why}); run ci/promtool.sh to install it (Debian's prometheus package)"
            ));
            eprintln!("######################################################################");
            return;
        }
    };

    let dir = workspace();
    let server = start(&dir, &TEST_ENV, &[]);
    let text = server.get("/metrics", TOKEN).await.text().await.unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "promtool check metrics: {}\n{said}\non:\n{text}",
        out.status
    );
}

/// `HH:MM` on the UTC clock, `hours` from now.
fn utc_clock_in(hours: i64) -> String {
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
    format!("{:02}:{:02}", at.hour(), at.minute())
}

#[tokio::test]
async fn time_to_emr_counts_a_registered_job_s_outcome_and_the_gauges_alerts_read() {
    let dir = workspace();
    let tokens = format!("{TOKEN},clinic-app:read+submit:{SUBMIT_TOKEN}");
    let open_now = format!("{}-{}", utc_clock_in(-1), utc_clock_in(1));
    let server = start(
        &dir,
        &[
            TEST_ENV[0],
            ("COBALT_RECEIVER_API_TOKENS", &tokens),
            ("COBALT_RECEIVER_CLINIC_HOURS", &open_now),
        ],
        &[],
    );
    let before = server.get("/metrics", TOKEN).await.text().await.unwrap();
    let family = "cobalt_receiver_time_to_emr_seconds";
    // Present from the start, empty.
    for outcome in ["created", "failed"] {
        let labels = [r#"account="default""#, &format!(r#"outcome="{outcome}""#)];
        assert_eq!(
            sample(&before, &format!("{family}_count"), &labels),
            Some(0.0),
            "{before}"
        );
    }
    assert_eq!(
        sample(&before, "cobalt_receiver_ready", &[]),
        Some(1.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "cobalt_receiver_clinic_open", &[]),
        Some(1.0),
        "{before}"
    );

    // A job registered 10 minutes ago whose note reached the EMR 90 s
    // after it was submitted; and one never registered.
    let submitted = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let registered = reqwest::Client::new()
        .put(format!("{}/v1/jobs/ttemr-1", server.address))
        .bearer_auth(SUBMIT_TOKEN)
        .json(&serde_json::json!({ "patient_note_id": "pn-ttemr", "submitted_at": rfc3339(submitted) }))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{}", registered.status());
    for (event, job) in [
        ("evt_ttemr_1", "ttemr-1"),
        ("evt_ttemr_2", "ttemr-unregistered"),
    ] {
        let outcome_at = rfc3339(submitted + time::Duration::seconds(90));
        let body = created_event(event, job, "pn-ttemr", &outcome_at).to_string();
        let answer = server.post(body.as_bytes(), &sign(body.as_bytes())).await;
        assert_eq!(answer.status(), 200);
    }
    // Its duplicate is not counted again.
    let body = created_event(
        "evt_ttemr_1",
        "ttemr-1",
        "pn-ttemr",
        &rfc3339(submitted + time::Duration::seconds(90)),
    )
    .to_string();
    assert_eq!(
        server
            .post(body.as_bytes(), &sign(body.as_bytes()))
            .await
            .status(),
        200
    );

    let after = server.get("/metrics", TOKEN).await.text().await.unwrap();
    let created = [r#"account="default""#, r#"outcome="created""#];
    assert_eq!(
        sample(&after, &format!("{family}_count"), &created),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, &format!("{family}_sum"), &created),
        Some(90.0),
        "{after}"
    );
    let bucket = |le: &str| {
        let le = format!(r#"le="{le}""#);
        sample(
            &after,
            &format!("{family}_bucket"),
            &[created[0], created[1], &le],
        )
    };
    assert_eq!(
        (bucket("60"), bucket("120")),
        (Some(0.0), Some(1.0)),
        "{after}"
    );
    drop(server);

    // Outside the clinic's hours, the gauge says so.
    let closed_now = format!("{}-{}", utc_clock_in(1), utc_clock_in(2));
    let server = start(
        &dir,
        &[
            TEST_ENV[0],
            TEST_ENV[1],
            ("COBALT_RECEIVER_CLINIC_HOURS", &closed_now),
        ],
        &[],
    );
    let text = server.get("/metrics", TOKEN).await.text().await.unwrap();
    assert_eq!(
        sample(&text, "cobalt_receiver_clinic_open", &[]),
        Some(0.0),
        "{text}"
    );
}

/// The metric names the shipped alert rules and dashboard query
/// (`deploy/prometheus`, less the rules' unit tests, whose input series
/// are made up, and `deploy/grafana`): each `cobalt_receiver_…` name, a
/// histogram's `_bucket`, `_sum` and `_count` as the histogram, and no
/// recording rule's name (those hold a `:`).
fn names_deploy_queries() -> std::collections::BTreeMap<String, Vec<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut names = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut folders = vec![root.join("prometheus"), root.join("grafana")];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("{folder:?}: {e}"));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let file = path.strip_prefix(&root).unwrap().display().to_string();
            if file.ends_with(".test.yaml") || file.ends_with(".test.yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            for name in metric_names(&text) {
                let files = names.entry(name).or_default();
                if !files.contains(&file) {
                    files.push(file.clone());
                }
            }
        }
    }
    names
}

/// Every `cobalt_receiver_[a-z0-9_]+` in `text` that is not part of a
/// longer word or of a recording rule's name (`level:metric:operations`).
fn metric_names(text: &str) -> Vec<String> {
    const PREFIX: &str = "cobalt_receiver_";
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    for (at, _) in text.match_indices(PREFIX) {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let rest = &text[at + PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with(':') || end == 0 {
            continue;
        }
        names.push(format!("{PREFIX}{}", &rest[..end]));
    }
    names
}

/// A rule or panel on a metric the service does not export never fires or
/// shows nothing, silently: every name the alert rules and the dashboard
/// query is a family of a fresh server's /metrics (one with an endpoint of
/// outgoing webhooks, so that their families are there too).
#[tokio::test]
async fn every_metric_deploy_queries_is_exported() {
    let queried = names_deploy_queries();
    assert!(
        queried.len() >= 15,
        "only {} metric names found in deploy/prometheus and deploy/grafana: {queried:?}",
        queried.len()
    );

    let env = [
        TEST_ENV[0],
        TEST_ENV[1],
        ("COBALT_RECEIVER_OUTBOUND_URL", "http://127.0.0.1:9/hooks"),
        ("COBALT_RECEIVER_OUTBOUND_SECRET", OUTBOUND_SECRET),
    ];
    let dir = workspace();
    let server = start(&dir, &env, &[]);
    let text = server.get("/metrics", TOKEN).await.text().await.unwrap();
    server.terminate();
    let families: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_once(' '))
        .collect();

    let missing: Vec<String> = queried
        .iter()
        .filter_map(|(name, files)| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| families.get(base) == Some(&"histogram"))
                .unwrap_or(name);
            (!families.contains_key(family)).then(|| format!("{name} ({})", files.join(", ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of the {} metric names deploy/ queries are not exported:\n  {}\nexported families: {:?}",
        missing.len(),
        queried.len(),
        missing.join("\n  "),
        families.keys().collect::<Vec<_>>()
    );
}
