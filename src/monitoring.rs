//! Prometheus metrics: every name, label and bucket in one place.
//!
//! Labels take values from small fixed sets (routes, outcomes, field names,
//! the two patient-note types), so no sender can grow the series count.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::event::{CREATED, FAILED, REJECTABLE_FIELDS};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// From seconds (a note Cobalt writes at once) to a day (one that waited
/// for a clinician, or for recovery).
const TIME_TO_EMR_BUCKETS: &[f64] = &[
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0,
];
const TIME_TO_EMR: &str = "cobalt_receiver_time_to_emr_seconds";

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
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TIME_TO_EMR.into()), TIME_TO_EMR_BUCKETS)
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
            describe();
            export_zeros();
            handle
        })
        .clone()
}

/// A closed set of label values: the enum, every value in `ALL` (so each
/// counter is exported at 0 from the start) and each value's text, once.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$variant_doc:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$variant_doc])* $variant),+
        }

        impl $name {
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label),+
                }
            }
        }
    };
}

label_set! {
    /// What became of a delivery to the webhook route.
    DeliveryOutcome {
        Applied => "applied",
        Superseded => "superseded",
        Ignored => "ignored",
        Duplicate => "duplicate",
        Rejected => "rejected",
        Overloaded => "overloaded",
        StorageUnavailable => "storage_unavailable",
        /// Refused for its signature, before the body is read.
        Unauthorized => "unauthorized",
        /// Over the body limit, before it is read whole.
        TooLarge => "too_large",
        /// Not an event at all.
        InvalidBody => "invalid_body",
    }
}

impl DeliveryOutcome {
    /// Whether the outcome is decided before the body is read, when the
    /// event's type is still `unknown`.
    fn before_the_type(self) -> bool {
        matches!(
            self,
            Self::Unauthorized | Self::TooLarge | Self::InvalidBody
        )
    }
}

label_set! {
    /// What the recovery sweep made of an outcome event it found.
    RecoveredOutcome {
        /// New here, and now deciding its job.
        Applied => "applied",
        /// New here, outranked by the job's deciding event.
        Superseded => "superseded",
        /// Its delivery had arrived.
        Duplicate => "duplicate",
    }
}

label_set! {
    /// How a recovery sweep ended.
    SweepOutcome {
        /// Every account's listing was read through.
        Completed => "completed",
        /// A listing failed (Cobalt unreachable, or the credentials refused).
        Failed => "failed",
    }
}

label_set! {
    /// What became of audit rows.
    AuditRows {
        Recorded => "recorded",
        /// Lost: the queue was full or the database refused them.
        Dropped => "dropped",
    }
}

label_set! {
    /// Outcomes of a note submission to Cobalt.
    SubmitOutcome {
        Ok => "ok",
        Rejected => "rejected",
        RateLimited => "rate_limited",
        Unauthorized => "unauthorized",
        Unreachable => "unreachable",
        Timeout => "timeout",
        ServerError => "server_error",
        /// Cobalt answered 2xx with a body that is not a submission's.
        Malformed => "malformed",
    }
}

label_set! {
    /// Outcomes of one attempt at listing Cobalt's events.
    ListOutcome {
        Ok => "ok",
        Malformed => "malformed",
        Rejected => "rejected",
        RateLimited => "rate_limited",
        Unauthorized => "unauthorized",
        Unreachable => "unreachable",
        ServerError => "server_error",
    }
}

/// Every family's `# HELP` text (and unit, where one applies), registered
/// before anything is recorded: `promtool check metrics` asks it of each.
/// The unit is kept as metadata only; the names already end in it (unit
/// suffixes are not enabled, so no name changes).
fn describe() {
    describe_counter!(
        "cobalt_receiver_deliveries_total",
        Unit::Count,
        "Deliveries to the webhook route, by event type and what became of them."
    );
    describe_counter!(
        "cobalt_receiver_rejected_events_total",
        Unit::Count,
        "Patient-note events rejected, by the field at fault."
    );
    describe_counter!(
        "cobalt_receiver_database_errors_total",
        Unit::Count,
        "Database operations that failed: batches, probes and purges."
    );
    describe_counter!(
        "cobalt_receiver_audit_rows_total",
        Unit::Count,
        "Audit rows recorded, or dropped (the queue was full or the database refused them)."
    );
    describe_counter!(
        "cobalt_receiver_cobalt_api_calls_total",
        Unit::Count,
        "Calls to Cobalt's API (each attempt), by call and outcome."
    );
    describe_counter!(
        "cobalt_receiver_recovered_events_total",
        Unit::Count,
        "Outcome events found by recovery sweeps, by what was made of them."
    );
    describe_histogram!(
        "cobalt_receiver_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template, method and status."
    );
    describe_histogram!(
        "cobalt_receiver_writer_batch_size",
        Unit::Count,
        "Deliveries per group commit (one database transaction)."
    );
    describe_histogram!(
        "cobalt_receiver_writer_commit_seconds",
        Unit::Seconds,
        "Time from a group commit's first statement to its commit."
    );
    describe_counter!(
        "cobalt_receiver_outbound_attempts_total",
        Unit::Count,
        "Attempts at outgoing webhooks, by endpoint and result (delivered, refused: a non-2xx answer, unreachable: none)."
    );
    describe_counter!(
        "cobalt_receiver_outbound_messages_total",
        Unit::Count,
        "Outgoing webhook messages settled, by endpoint and outcome (delivered, failed: every attempt of the schedule failed)."
    );
    describe_gauge!(
        "cobalt_receiver_outbound_queued",
        Unit::Count,
        "Outgoing webhook messages waiting to be delivered, by endpoint, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_outbound_failed",
        Unit::Count,
        "Outgoing webhook messages that failed for good and were not sent again, by endpoint, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_outbound_oldest_undelivered_age_seconds",
        Unit::Seconds,
        "Age of the oldest change an endpoint has not taken yet (0 when none), at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_outbound_failing_seconds",
        Unit::Seconds,
        "How long an endpoint has failed every attempt since its last delivery (0 when it is not failing), at scrape time."
    );
    describe_counter!(
        "cobalt_receiver_recovery_sweeps_total",
        Unit::Count,
        "Recovery sweeps, by how they ended (completed, failed: a listing of Cobalt's events failed)."
    );
    describe_histogram!(
        TIME_TO_EMR,
        Unit::Seconds,
        "Time from a registered job's submission (or registration) to its outcome at Cobalt, by outcome and account."
    );
    describe_gauge!(
        "cobalt_receiver_ready",
        Unit::Count,
        "1 when the database takes a durable write (the readiness check), 0 when not, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_clinic_open",
        Unit::Count,
        "1 within the configured clinic_hours on the clinic's clock, 0 outside them, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_jobs",
        Unit::Count,
        "Jobs in each final state, counted at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_pending_jobs",
        Unit::Count,
        "Expected jobs without an outcome, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_overdue_jobs",
        Unit::Count,
        "Pending jobs past their expected time, at scrape time."
    );
    describe_gauge!(
        "cobalt_receiver_oldest_pending_job_age_seconds",
        Unit::Seconds,
        "How long the oldest pending job has waited (0 when none), at scrape time."
    );
}

/// Every counter an alert may watch exists from the start, at 0: a rule on
/// `rate(...)` or `increase(...)` then works on a quiet day too.
fn export_zeros() {
    for outcome in DeliveryOutcome::ALL {
        let types: &[&'static str] = match outcome.before_the_type() {
            true => &["unknown"],
            false => &[CREATED, FAILED, "other"],
        };
        for event_type in types {
            delivery_counter(event_type, *outcome).increment(0);
        }
    }
    for field in REJECTABLE_FIELDS {
        counter!("cobalt_receiver_rejected_events_total", "field" => field).increment(0);
    }
    counter!("cobalt_receiver_database_errors_total").increment(0);
    for outcome in AuditRows::ALL {
        audit_rows_counter(*outcome).increment(0);
    }
    for outcome in SubmitOutcome::ALL {
        cobalt_call_counter("submit_note", outcome.as_str()).increment(0);
    }
    for outcome in ListOutcome::ALL {
        cobalt_call_counter("list_events", outcome.as_str()).increment(0);
    }
    for outcome in RecoveredOutcome::ALL {
        recovered_counter(*outcome).increment(0);
    }
    for outcome in SweepOutcome::ALL {
        sweep_counter(*outcome).increment(0);
    }
    // Histograms are present from the start too, empty. The exporter
    // renders every registered histogram, recorded into or not, and one
    // never recorded into renders every bucket, `_sum` and `_count` at 0:
    // registering it (a handle, no observation) is enough, and adds
    // nothing to its count or sum. A labelled one gets the series of the
    // webhook route's answered deliveries, which a latency alert watches.
    let _ = histogram!("cobalt_receiver_writer_batch_size");
    let _ = histogram!("cobalt_receiver_writer_commit_seconds");
    for outcome in [CREATED_STATUS, FAILED_STATUS] {
        let _ = histogram!(TIME_TO_EMR, "outcome" => outcome, "account" => DEFAULT_ACCOUNT);
    }
    let _ = histogram!(
        "cobalt_receiver_http_request_duration_seconds",
        "route" => "/webhooks/cobalt",
        "method" => "POST",
        "status" => "200"
    );
}

/// One note submitted to Cobalt, and how that went.
pub fn note_submitted(outcome: SubmitOutcome) {
    cobalt_call_counter("submit_note", outcome.as_str()).increment(1);
}

/// One attempt at listing Cobalt's events, and how that went.
pub fn events_listed(outcome: ListOutcome) {
    cobalt_call_counter("list_events", outcome.as_str()).increment(1);
}

fn cobalt_call_counter(call: &'static str, outcome: &'static str) -> metrics::Counter {
    counter!("cobalt_receiver_cobalt_api_calls_total", "call" => call, "outcome" => outcome)
}

/// An outcome event found by the recovery sweep.
pub fn recovered(outcome: RecoveredOutcome) {
    recovered_counter(outcome).increment(1);
}

fn recovered_counter(outcome: RecoveredOutcome) -> metrics::Counter {
    counter!("cobalt_receiver_recovered_events_total", "outcome" => outcome.as_str())
}

/// A recovery sweep, and how it ended.
pub fn sweep(outcome: SweepOutcome) {
    sweep_counter(outcome).increment(1);
}

fn sweep_counter(outcome: SweepOutcome) -> metrics::Counter {
    counter!("cobalt_receiver_recovery_sweeps_total", "outcome" => outcome.as_str())
}

const CREATED_STATUS: &str = "created";
const FAILED_STATUS: &str = "failed";
/// The account label of a job submitted without a reference id (the
/// default access token's).
const DEFAULT_ACCOUNT: &str = "default";
/// The account label of a reference id no configured account has.
const OTHER_ACCOUNT: &str = "other";

/// The configured accounts' reference ids: the only `account` label
/// values besides `default` and `other`, so a sender cannot add series.
static ACCOUNTS: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Names the configured accounts (once, at start); their time-to-EMR
/// series exist from then, empty.
pub fn accounts<'a>(reference_ids: impl IntoIterator<Item = &'a str>) {
    let known = ACCOUNTS.get_or_init(|| reference_ids.into_iter().map(interned).collect());
    for account in known {
        for outcome in [CREATED_STATUS, FAILED_STATUS] {
            let _ = histogram!(TIME_TO_EMR, "outcome" => outcome, "account" => *account);
        }
    }
}

fn account_label(reference_id: Option<&str>) -> &'static str {
    match reference_id {
        None => DEFAULT_ACCOUNT,
        Some(id) => ACCOUNTS
            .get()
            .and_then(|known| known.iter().copied().find(|known| *known == id))
            .unwrap_or(OTHER_ACCOUNT),
    }
}

/// A registered job's first outcome, committed: how long it took from
/// submission (or registration) to the outcome event's time at Cobalt.
pub fn time_to_emr(
    status: crate::domain::job::JobStatus,
    reference_id: Option<&str>,
    submitted_ns: i64,
    outcome_ns: i64,
) {
    use crate::domain::job::JobStatus;
    let outcome = match status {
        JobStatus::Created => CREATED_STATUS,
        JobStatus::Failed => FAILED_STATUS,
    };
    let seconds = outcome_ns.saturating_sub(submitted_ns).max(0) as f64 / 1e9;
    histogram!(TIME_TO_EMR, "outcome" => outcome, "account" => account_label(reference_id))
        .record(seconds);
}

/// The readiness check's answer and the clinic's hours, read at scrape
/// time.
pub fn ready(ready: bool, clinic_open: bool) {
    gauge!("cobalt_receiver_ready").set(f64::from(u8::from(ready)));
    gauge!("cobalt_receiver_clinic_open").set(f64::from(u8::from(clinic_open)));
}

/// Pending and overdue jobs, and how long the oldest has waited, read at
/// scrape time.
pub fn pending(pending: i64, overdue: i64, oldest_age_seconds: f64) {
    gauge!("cobalt_receiver_pending_jobs").set(pending as f64);
    gauge!("cobalt_receiver_overdue_jobs").set(overdue as f64);
    gauge!("cobalt_receiver_oldest_pending_job_age_seconds").set(oldest_age_seconds);
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
pub fn delivery(event_type: &'static str, outcome: DeliveryOutcome) {
    delivery_counter(event_type, outcome).increment(1);
}

fn delivery_counter(event_type: &'static str, outcome: DeliveryOutcome) -> metrics::Counter {
    counter!("cobalt_receiver_deliveries_total", "type" => event_type, "outcome" => outcome.as_str())
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
pub fn audit_rows(outcome: AuditRows, count: usize) {
    audit_rows_counter(outcome).increment(count as u64);
}

fn audit_rows_counter(outcome: AuditRows) -> metrics::Counter {
    counter!("cobalt_receiver_audit_rows_total", "outcome" => outcome.as_str())
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

/// The outgoing webhooks' endpoints: their counters exist from the start,
/// at 0, for alerts on a quiet day.
pub fn outbound_endpoints<'a>(names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        for result in ["delivered", "refused", "unreachable"] {
            counter!("cobalt_receiver_outbound_attempts_total", "endpoint" => name.to_owned(), "result" => result)
                .increment(0);
        }
        for outcome in ["delivered", "failed"] {
            counter!("cobalt_receiver_outbound_messages_total", "endpoint" => name.to_owned(), "outcome" => outcome)
                .increment(0);
        }
    }
}

/// One attempt at an outgoing webhook.
pub fn outbound_attempt(endpoint: &str, attempt: &crate::outbound::attempt::Attempt) {
    use crate::outbound::attempt::Attempt;
    let result = match attempt {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Refused { .. } => "refused",
        Attempt::Unreachable { .. } => "unreachable",
    };
    counter!("cobalt_receiver_outbound_attempts_total", "endpoint" => endpoint.to_owned(), "result" => result)
        .increment(1);
}

/// An outgoing webhook message delivered, or failed for good.
pub fn outbound_settled(endpoint: &str, delivered: bool) {
    let outcome = if delivered { "delivered" } else { "failed" };
    counter!("cobalt_receiver_outbound_messages_total", "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// An endpoint's queue, read at scrape time.
pub fn outbound_queue(endpoint: &str, summary: &crate::store::outbound::EndpointSummary) {
    let now = crate::clock::now_ns();
    let age =
        |since: Option<i64>| since.map_or(0.0, |ns| (now.saturating_sub(ns)).max(0) as f64 / 1e9);
    let label = || endpoint.to_owned();
    gauge!("cobalt_receiver_outbound_queued", "endpoint" => label()).set(summary.queued as f64);
    gauge!("cobalt_receiver_outbound_failed", "endpoint" => label()).set(summary.failed as f64);
    gauge!("cobalt_receiver_outbound_oldest_undelivered_age_seconds", "endpoint" => label())
        .set(age(summary.oldest_queued_ns));
    gauge!("cobalt_receiver_outbound_failing_seconds", "endpoint" => label())
        .set(age(summary.failing_since_ns));
}
