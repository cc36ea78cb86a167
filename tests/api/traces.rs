//! OpenTelemetry traces, as a collector receives them: the compiled
//! binary with the standard OTEL_* variables, exporting over OTLP/HTTP to a
//! fake collector (a real HTTP server that decodes what arrives with
//! OpenTelemetry's own protobuf types).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

use crate::fake_cobalt::{self, EVENTS_PATH, FakeCobalt, NOTES_PATH};
use crate::helpers::*;
use crate::process::*;

/// A collector on a loopback port that keeps every export request.
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Collector {
    async fn start() -> Self {
        let received: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
        let router = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, received }
    }

    /// Every span received so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref()?.value.as_ref())
                    .map(|v| match v {
                        AnyValue::StringValue(s) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }

    /// Everything received, as text: what a search for patient data reads.
    fn everything(&self) -> String {
        format!("{:?}", self.received.lock().unwrap())
    }
}

async fn export(
    State(received): State<Arc<Mutex<Vec<ExportTraceServiceRequest>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let answer = [(header::CONTENT_TYPE, "application/x-protobuf")];
    match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(request) if protobuf => {
            received.lock().unwrap().push(request);
            (
                StatusCode::OK,
                answer,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        _ => (StatusCode::BAD_REQUEST, answer, Vec::new()),
    }
}

fn traceparent(trace_id: &str, parent_id: &str) -> String {
    format!("00-{trace_id}-{parent_id}-01")
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

const SERVICE: &str = "clinic-receiver-under-test";
const DELIVERY_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const DELIVERY_PARENT: &str = "00f067aa0ba902b7";
const READ_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const SUBMIT_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4738";
const SWEEP_TRACE: &str = "7bf92f3577b34da6a3ce929d0e0e4739";

#[tokio::test]
async fn requests_sent_with_a_traceparent_are_traced_under_it_without_patient_data() {
    let collector = Collector::start().await;
    let cobalt = FakeCobalt::start(None).await;
    let dir = workspace();
    let tokens = format!("ops:read+submit+operate:{OPS_TOKEN}");
    let server = start(
        &dir,
        &[
            ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
            ("COBALT_RECEIVER_API_TOKENS", &tokens),
            ("COBALT_RECEIVER_COBALT_API_URL", &cobalt.url),
            ("COBALT_RECEIVER_COBALT_CLIENT_ID", fake_cobalt::CLIENT_ID),
            (
                "COBALT_RECEIVER_COBALT_CLIENT_SECRET",
                fake_cobalt::CLIENT_SECRET,
            ),
            (
                "COBALT_RECEIVER_COBALT_ACCESS_TOKEN",
                fake_cobalt::ACCESS_TOKEN,
            ),
            ("COBALT_RECEIVER_RECONCILE_INTERVAL_SECS", "0"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            ("OTEL_SERVICE_NAME", SERVICE),
            // Batches leave every 50 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        &[],
    );
    let client = reqwest::Client::new();

    // A delivery, carrying patient data, sent with a traceparent.
    let event = created_event(
        "evt_traced_1",
        "job-traced-1",
        "pn_traced_1",
        "2026-12-05T09:00:00Z",
    );
    let body = event.to_string();
    let delivered = client
        .post(format!("{}/webhooks/cobalt", server.address))
        .header("cobalt-verification", sign(body.as_bytes()))
        .header("traceparent", traceparent(DELIVERY_TRACE, DELIVERY_PARENT))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 200);

    // A status read, a submission (which calls Cobalt) and a sweep.
    let read = client
        .get(format!("{}/v1/jobs/job-traced-1", server.address))
        .bearer_auth(OPS_TOKEN)
        .header("traceparent", traceparent(READ_TRACE, DELIVERY_PARENT))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let note = json!({ "note": NOTE_TEXT, "subject": SUBJECT, "patient_mrn": MRN, "location_id": "loc-1" });
    let submitted = client
        .post(format!("{}/v1/patient-notes", server.address))
        .bearer_auth(OPS_TOKEN)
        .header("traceparent", traceparent(SUBMIT_TRACE, DELIVERY_PARENT))
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202, "{:?}", submitted.text().await);
    let swept = client
        .post(format!("{}/v1/recoveries", server.address))
        .bearer_auth(OPS_TOKEN)
        .header("traceparent", traceparent(SWEEP_TRACE, DELIVERY_PARENT))
        .send()
        .await
        .unwrap();
    assert_eq!(swept.status(), 200, "{:?}", swept.text().await);

    let in_trace = |trace: &str| -> Vec<Span> {
        collector
            .spans()
            .into_iter()
            .filter(|(_, span)| hex_of(&span.trace_id) == trace)
            .map(|(_, span)| span)
            .collect()
    };
    let names = |trace: &str| -> BTreeSet<String> {
        in_trace(trace).into_iter().map(|span| span.name).collect()
    };
    let expected: [(&str, &[&str]); 4] = [
        (
            DELIVERY_TRACE,
            &[
                "POST /webhooks/cobalt",
                "webhook",
                "verify signature",
                "queue wait",
                "batch commit",
            ],
        ),
        (READ_TRACE, &["GET /v1/jobs/{job_id}"]),
        (SUBMIT_TRACE, &["POST /v1/patient-notes"]),
        (
            SWEEP_TRACE,
            &[
                "POST /v1/recoveries",
                "recovery sweep",
                "GET /v1/webhook-events",
            ],
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing: Vec<(&str, Vec<&str>)> = expected
            .iter()
            .map(|(trace, wanted)| {
                let have = names(trace);
                (
                    *trace,
                    wanted
                        .iter()
                        .copied()
                        .filter(|w| !have.contains(*w))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, missing)| !missing.is_empty())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing after 15 s: {missing:?}\nreceived: {:?}\nlog:\n{}",
            collector
                .spans()
                .iter()
                .map(|(_, s)| (hex_of(&s.trace_id), s.name.clone()))
                .collect::<Vec<_>>(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every span is the configured service's.
    for (service, span) in collector.spans() {
        assert_eq!(service, SERVICE, "{}", span.name);
    }
    // The delivery's server span continues the caller's span; the rest of
    // the delivery hangs under it.
    let delivery = in_trace(DELIVERY_TRACE);
    let server_span = delivery
        .iter()
        .find(|s| s.name == "POST /webhooks/cobalt")
        .unwrap();
    assert_eq!(hex_of(&server_span.parent_span_id), DELIVERY_PARENT);
    assert_eq!(server_span.kind, SpanKind::Server as i32);
    assert_eq!(
        attribute(server_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    let ids: BTreeSet<String> = delivery.iter().map(|s| hex_of(&s.span_id)).collect();
    for span in delivery
        .iter()
        .filter(|s| s.name != "POST /webhooks/cobalt")
    {
        assert!(
            ids.contains(&hex_of(&span.parent_span_id)),
            "{} has a parent outside the delivery's trace",
            span.name
        );
    }
    let webhook = delivery.iter().find(|s| s.name == "webhook").unwrap();
    assert_eq!(
        attribute(webhook, "event_id").as_deref(),
        Some("evt_traced_1")
    );

    // Calls to Cobalt carry the trace on: their traceparent names the
    // client span of the call.
    for (trace, path) in [(SUBMIT_TRACE, NOTES_PATH), (SWEEP_TRACE, EVENTS_PATH)] {
        let calls: Vec<Span> = in_trace(trace)
            .into_iter()
            .filter(|s| s.kind == SpanKind::Client as i32)
            .collect();
        assert!(
            calls.iter().any(|s| s.name.ends_with(path)
                && attribute(s, "http.response.status_code").as_deref() == Some("200")),
            "no client span for {path}"
        );
        let sent = cobalt.traceparents(path);
        let carried = sent.iter().find(|value| value.contains(trace));
        let carried =
            carried.unwrap_or_else(|| panic!("{path} got no traceparent of {trace}: {sent:?}"));
        let parent = carried.split('-').nth(2).unwrap();
        assert!(
            calls.iter().any(|s| hex_of(&s.span_id) == parent),
            "{path}: {carried} names no client span"
        );
    }

    // No patient data anywhere in what the collector received.
    let everything = collector.everything();
    for phi in [MRN, SUBJECT, NOTE_TEXT] {
        assert!(!everything.contains(phi), "{phi} reached the collector");
    }
    assert!(
        everything.contains("evt_traced_1"),
        "the search above read the spans"
    );
}

#[tokio::test]
async fn without_the_variables_nothing_is_exported_and_unsupported_choices_are_refused() {
    let collector = Collector::start().await;
    let dir = workspace();
    // No endpoint: no traces, whatever else is set.
    let server = start(
        &dir,
        &[TEST_ENV[0], TEST_ENV[1], ("OTEL_SERVICE_NAME", SERVICE)],
        &[],
    );
    let event = created_event(
        "evt_untraced",
        "job-untraced",
        "pn_untraced",
        "2026-12-05T09:00:00Z",
    );
    let body = event.to_string();
    let answer = server.post(body.as_bytes(), &sign(body.as_bytes())).await;
    assert_eq!(answer.status(), 200);
    drop(server);
    // The standard variable turning them off wins over an endpoint.
    let off = start(
        &dir,
        &[
            TEST_ENV[0],
            TEST_ENV[1],
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
        &[],
    );
    let event = created_event(
        "evt_untraced_2",
        "job-untraced-2",
        "pn_untraced_2",
        "2026-12-05T09:00:00Z",
    );
    let body = event.to_string();
    let answer = off.post(body.as_bytes(), &sign(body.as_bytes())).await;
    assert_eq!(answer.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        collector.spans().is_empty(),
        "spans were exported while off"
    );
    drop(off);
    // A protocol this build does not speak is a configuration error.
    let (status, log) = run(
        &dir,
        &[
            TEST_ENV[0],
            TEST_ENV[1],
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
        &[],
    );
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{log}");
}
