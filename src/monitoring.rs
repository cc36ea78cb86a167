//! Prometheus metrics: every name, label and bucket in one place.
//!
//! Labels take values from small fixed sets (routes, outcomes, field names,
//! the two patient-note types), so no sender can grow the series count.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::event::{CREATED, FAILED, REJECTABLE_FIELDS};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Installs the process-wide recorder once; later calls get the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("cobalt_receiver_writer_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .expect("the metrics recorder installs once, with valid buckets");
            // Histograms are folded into their buckets by upkeep; keep it
            // running even when nobody scrapes.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("starting the metrics upkeep thread");
            export_zeros();
            handle
        })
        .clone()
}

/// Outcomes decided before the body is read, when the type is still `unknown`.
const UNREAD_OUTCOMES: [&str; 3] = ["unauthorized", "too_large", "invalid_body"];
/// Outcomes of a delivery whose type is known.
const READ_OUTCOMES: [&str; 7] = [
    "applied",
    "superseded",
    "ignored",
    "duplicate",
    "rejected",
    "overloaded",
    "storage_unavailable",
];

/// Every counter an alert may watch exists from the start, at 0: a rule on
/// `rate(...)` or `increase(...)` then works on a quiet day too.
fn export_zeros() {
    for outcome in UNREAD_OUTCOMES {
        counter!("cobalt_receiver_deliveries_total", "type" => "unknown", "outcome" => outcome)
            .increment(0);
    }
    for event_type in [CREATED, FAILED, "other"] {
        for outcome in READ_OUTCOMES {
            counter!("cobalt_receiver_deliveries_total", "type" => event_type, "outcome" => outcome)
                .increment(0);
        }
    }
    for field in REJECTABLE_FIELDS {
        counter!("cobalt_receiver_rejected_events_total", "field" => field).increment(0);
    }
    counter!("cobalt_receiver_database_errors_total").increment(0);
    for outcome in ["recorded", "dropped"] {
        counter!("cobalt_receiver_audit_rows_total", "outcome" => outcome).increment(0);
    }
    for (call, outcomes) in [
        ("submit_note", &SUBMIT_OUTCOMES[..]),
        ("list_events", &LIST_OUTCOMES[..]),
    ] {
        for outcome in outcomes {
            counter!("cobalt_receiver_cobalt_api_calls_total", "call" => call, "outcome" => *outcome)
                .increment(0);
        }
    }
    for outcome in ["applied", "superseded", "duplicate"] {
        counter!("cobalt_receiver_recovered_events_total", "outcome" => outcome).increment(0);
    }
}

/// Outcomes of a note submission to Cobalt.
const SUBMIT_OUTCOMES: [&str; 7] = [
    "ok",
    "rejected",
    "rate_limited",
    "unauthorized",
    "unreachable",
    "timeout",
    "server_error",
];
/// Outcomes of one attempt at listing Cobalt's events.
const LIST_OUTCOMES: [&str; 7] = [
    "ok",
    "malformed",
    "rejected",
    "rate_limited",
    "unauthorized",
    "unreachable",
    "server_error",
];

/// One call to Cobalt's API (`submit_note`, `list_events`) and its outcome.
pub fn cobalt_call(call: &'static str, outcome: &'static str) {
    counter!("cobalt_receiver_cobalt_api_calls_total", "call" => call, "outcome" => outcome)
        .increment(1);
}

/// An outcome event found by the recovery sweep: `applied` or
/// `superseded` (new here), or `duplicate` (its delivery had arrived).
pub fn recovered(outcome: &'static str) {
    counter!("cobalt_receiver_recovered_events_total", "outcome" => outcome).increment(1);
}

/// Pending and overdue jobs, read at scrape time.
pub fn pending(summary: &crate::store::PendingSummary, now_ns: i64) {
    gauge!("cobalt_receiver_pending_jobs").set(summary.pending as f64);
    gauge!("cobalt_receiver_overdue_jobs").set(summary.overdue as f64);
    let age = summary.oldest_submitted_ns.map_or(0.0, |oldest| {
        (now_ns.saturating_sub(oldest)).max(0) as f64 / 1e9
    });
    gauge!("cobalt_receiver_oldest_pending_job_age_seconds").set(age);
}

/// The `type` label of a delivery: one of a fixed few, whatever was sent.
pub fn type_label(event_type: Option<&str>) -> &'static str {
    match event_type {
        Some(CREATED) => CREATED,
        Some(FAILED) => FAILED,
        Some(_) => "other",
        None => "unknown",
    }
}

/// A delivery to the webhook route (`type_label`) and what became of it.
pub fn delivery(event_type: &'static str, outcome: &'static str) {
    counter!("cobalt_receiver_deliveries_total", "type" => event_type, "outcome" => outcome)
        .increment(1);
}

/// A patient-note event rejected for the named field.
pub fn rejected(field: &'static str) {
    counter!("cobalt_receiver_rejected_events_total", "field" => field).increment(1);
}

/// One HTTP request, by route template, method and status.
pub fn request(route: &str, method: &axum::http::Method, status: u16, seconds: f64) {
    histogram!(
        "cobalt_receiver_http_request_duration_seconds",
        "route" => interned(route),
        "method" => method_label(method),
        "status" => status_label(status)
    )
    .record(seconds);
}

/// A method's label: the standard ones by name, any other as `other` (a
/// client may send any token, and each would be a new series).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn status_label(status: u16) -> &'static str {
    let digits = itoa_status(status);
    interned(std::str::from_utf8(&digits).unwrap_or("000"))
}

/// A status code's three digits (axum's `StatusCode` keeps it in 100..=999).
fn itoa_status(status: u16) -> [u8; 3] {
    let status = status.min(999);
    [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

/// A label value from a small, bounded set (route templates, status codes)
/// as a `'static` string, made once: recording a request then copies no
/// label. Never called with a value a client chooses freely.
fn interned(value: &str) -> &'static str {
    static VALUES: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    let find = |values: &[&'static str]| values.iter().copied().find(|v| *v == value);
    if let Some(found) = find(&VALUES.read().unwrap_or_else(|e| e.into_inner())) {
        return found;
    }
    let mut values = VALUES.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find(&values) {
        return found;
    }
    let made: &'static str = Box::leak(value.to_owned().into_boxed_str());
    values.push(made);
    made
}

/// One group commit: how many deliveries it held and how long it took.
pub fn batch_committed(size: usize, seconds: f64) {
    histogram!("cobalt_receiver_writer_batch_size").record(size as f64);
    histogram!("cobalt_receiver_writer_commit_seconds").record(seconds);
}

/// Audit rows `recorded` or `dropped` (the database took no writes for
/// longer than the queue holds).
pub fn audit_rows(outcome: &'static str, count: usize) {
    counter!("cobalt_receiver_audit_rows_total", "outcome" => outcome).increment(count as u64);
}

/// A database operation that failed (a batch, a probe, a purge).
pub fn database_error() {
    counter!("cobalt_receiver_database_errors_total").increment(1);
}

/// The number of jobs in each final state, read at scrape time.
pub fn jobs(by_status: &[(String, i64)]) {
    for status in ["created", "failed"] {
        let count = by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        gauge!("cobalt_receiver_jobs", "status" => status).set(count as f64);
    }
}

/// The Prometheus text exposition of everything recorded.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}
