//! Outgoing webhooks: every change pushed to the clinic's app, signed per
//! Standard Webhooks (checked here with that spec's own Rust library, not
//! with this service's code), retried with the same `webhook-id`, never
//! lost to a crash, in order per job.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::process::*;

/// How the receiver answers.
const FAIL_FIRST: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    verified: bool,
    body: Value,
    answered: u16,
}

/// The clinic's app: verifies every request with the `standardwebhooks`
/// crate and records it.
#[derive(Clone)]
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<AtomicU8>,
}

impl Receiver {
    async fn start(mode: u8) -> Self {
        let receiver = Receiver {
            url: String::new(),
            seen: Arc::default(),
            mode: Arc::new(AtomicU8::new(mode)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(take))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, ..receiver }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The messages answered 2xx, in the order they were.
    fn delivered(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.answered == 200)
            .collect()
    }

    async fn wait_for_delivered(&self, count: usize, limit: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + limit;
        loop {
            let delivered = self.delivered();
            let distinct: HashSet<&str> = delivered.iter().map(|s| s.id.as_str()).collect();
            if distinct.len() >= count {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} delivered: {:#?}",
                distinct.len(),
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn take(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verified = standardwebhooks::Webhook::new(OUTBOUND_SECRET)
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut seen = receiver.seen.lock().unwrap();
    let answered = match receiver.mode.load(Ordering::SeqCst) {
        FAIL_FIRST if !seen.iter().any(|s| s.id == id) => 500,
        DOWN => 503,
        _ if !verified => 401,
        _ => 200,
    };
    seen.push(Seen {
        id,
        verified,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

#[tokio::test]
async fn every_change_arrives_verified_and_is_retried_with_the_same_webhook_id() {
    let app_hook = Receiver::start(FAIL_FIRST).await;
    let records_hook = Receiver::start(UP).await;
    let app = spawn_app_with(|config| {
        send_outbound(
            config,
            &[
                ("app-retried", &app_hook.url, ALL_WEBHOOK_TYPES, false),
                ("records", &records_hook.url, &["job.created"], true),
            ],
            &[1; 10],
        )
    })
    .await;
    app.register("7501", json!({ "patient_note_id": "pn-7501" }))
        .await;
    for event in [
        created_event("evt_o1", "7501", "pn-7501", "2025-10-09T10:00:00Z"),
        failed_event("evt_o2", "7502", "pn-7502", "2025-10-09T10:00:00Z"),
        created_event("evt_o3", "7503", "pn-7503", "2025-10-09T10:00:00Z"),
    ] {
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }

    let delivered = app_hook
        .wait_for_delivered(4, Duration::from_secs(30))
        .await;
    let seen = app_hook.seen();
    assert!(seen.iter().all(|s| s.verified), "every request verifies");
    // Each message failed once (500), then came again with the same id.
    let mut attempts: HashMap<&str, Vec<u16>> = HashMap::new();
    for s in &seen {
        attempts.entry(&s.id).or_default().push(s.answered);
    }
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(attempts.values().all(|a| a == &[500, 200]), "{attempts:?}");
    for s in &seen {
        let text = s.body.to_string();
        assert!(!text.contains(NOTE_TEXT) && !text.contains(SUBJECT));
        assert!(!text.contains(MRN), "no MRN to an endpoint without phi");
        assert!(s.body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let types: Vec<(&str, &str)> = delivered
        .iter()
        .map(|s| {
            (
                s.body["data"]["job_id"].as_str().unwrap(),
                s.body["type"].as_str().unwrap(),
            )
        })
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("7501", "job.created"),
            ("7501", "job.registered"),
            ("7502", "job.failed"),
            ("7503", "job.created")
        ]
    );
    // A job's messages arrive in the order of its changes.
    let of_7501: Vec<&str> = types
        .iter()
        .filter(|(job, _)| *job == "7501")
        .map(|(_, kind)| *kind)
        .collect();
    assert_eq!(of_7501, ["job.registered", "job.created"]);
    let created = delivered
        .iter()
        .find(|s| s.body["data"]["job_id"] == "7503")
        .unwrap();
    assert_eq!(created.body["data"]["status"], "created");
    assert_eq!(created.body["data"]["emr_note_id"], "emr-evt_o3");
    assert_eq!(created.body["data"]["change"]["kind"], "created");

    // The endpoint that takes patient data gets the MRN, and only the
    // types it asked for.
    let records = records_hook
        .wait_for_delivered(2, Duration::from_secs(30))
        .await;
    assert!(records.iter().all(|s| s.verified));
    assert!(records.iter().all(|s| s.body["type"] == "job.created"));
    assert!(records.iter().all(|s| s.body["data"]["patient_mrn"] == MRN));
    assert!(
        !records
            .iter()
            .any(|s| s.body.to_string().contains(NOTE_TEXT))
    );

    // Metrics: attempts and messages by endpoint, nothing left queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = app.metrics().await;
        if metrics.contains(
            "cobalt_receiver_outbound_messages_total{endpoint=\"app-retried\",outcome=\"delivered\"} 4",
        ) || Instant::now() > deadline
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for line in [
        "cobalt_receiver_outbound_messages_total{endpoint=\"app-retried\",outcome=\"delivered\"} 4",
        "cobalt_receiver_outbound_attempts_total{endpoint=\"app-retried\",result=\"refused\"} 4",
        "cobalt_receiver_outbound_attempts_total{endpoint=\"app-retried\",result=\"delivered\"} 4",
        "cobalt_receiver_outbound_messages_total{endpoint=\"app-retried\",outcome=\"failed\"} 0",
        "cobalt_receiver_outbound_queued{endpoint=\"app-retried\"} 0",
        "cobalt_receiver_outbound_failed{endpoint=\"app-retried\"} 0",
        "cobalt_receiver_outbound_failing_seconds{endpoint=\"app-retried\"} 0",
        "cobalt_receiver_outbound_oldest_undelivered_age_seconds{endpoint=\"records\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_message_that_fails_every_attempt_is_marked_failed_and_counted() {
    let hook = Receiver::start(DOWN).await;
    let app = spawn_app_with(|config| {
        send_outbound(
            config,
            &[("app-down", &hook.url, ALL_WEBHOOK_TYPES, false)],
            &[1, 1],
        );
    })
    .await;
    let event = failed_event("evt_d1", "7601", "pn-7601", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = app.metrics().await;
        if metrics.contains(
            "cobalt_receiver_outbound_messages_total{endpoint=\"app-down\",outcome=\"failed\"} 1",
        ) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Three attempts (the first and two retries), then no more.
    assert_eq!(hook.seen().len(), 3, "{:?}", hook.seen());
    assert!(metrics.contains("cobalt_receiver_outbound_failed{endpoint=\"app-down\"} 1"));
    assert!(metrics.contains("cobalt_receiver_outbound_queued{endpoint=\"app-down\"} 0"));
    let failing = metrics
        .lines()
        .find(|l| l.starts_with("cobalt_receiver_outbound_failing_seconds{endpoint=\"app-down\"}"))
        .unwrap();
    assert!(!failing.ends_with(" 0"), "{failing}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.seen().len(), 3, "a failed message is not tried again");
    app.stop().await;
}

/// The receiver is down through several retries, and the service is
/// killed (SIGKILL) and started again meanwhile: once the receiver is back
/// every change arrives, each job's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_to_a_long_outage_and_a_kill_and_each_job_keeps_its_order() {
    let hook = Receiver::start(DOWN).await;
    let dir = workspace();
    let retries = vec!["1"; 30].join(",");
    let env = [
        ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
        ("COBALT_RECEIVER_API_TOKENS", TOKEN),
        ("COBALT_RECEIVER_OUTBOUND_URL", hook.url.as_str()),
        ("COBALT_RECEIVER_OUTBOUND_SECRET", OUTBOUND_SECRET),
        (
            "COBALT_RECEIVER_OUTBOUND_RETRY_DELAYS_SECS",
            retries.as_str(),
        ),
    ];
    let mut server = start(&dir, &env, &[]);
    const JOBS: usize = 8;
    for n in 0..JOBS {
        let (job, note) = (format!("{}", 7700 + n), format!("pn-77{n}"));
        // Each job changes twice: failed, then created (which outranks it).
        for event in [
            failed_event(&format!("evt_k{n}a"), &job, &note, "2025-10-09T10:00:00Z"),
            created_event(&format!("evt_k{n}b"), &job, &note, "2025-10-09T10:05:00Z"),
        ] {
            let response = server
                .post(
                    event.to_string().as_bytes(),
                    &sign(event.to_string().as_bytes()),
                )
                .await;
            assert_eq!(response.status(), 200);
        }
    }
    // Several attempts fail, then the service is killed mid-outage.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.seen().len() < JOBS * 3 {
        assert!(Instant::now() < deadline, "{:?}", hook.seen().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.child.kill().unwrap();
    server.wait_exit(Duration::from_secs(10));
    let server = start(&dir, &env, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    hook.mode.store(UP, Ordering::SeqCst);
    let delivered = hook
        .wait_for_delivered(JOBS * 2, Duration::from_secs(60))
        .await;
    assert!(hook.seen().iter().all(|s| s.verified));
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut first_delivery = HashSet::new();
    for s in &delivered {
        if first_delivery.insert(s.id.clone()) {
            order
                .entry(s.body["data"]["job_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(s.body["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(order.len(), JOBS);
    for (job, kinds) in &order {
        assert_eq!(kinds, &["job.failed", "job.created"], "job {job}");
    }
    server.terminate();
}

/// Two replicas on one PostgreSQL database, both configured with the
/// endpoint, both taking deliveries: one sends at a time (the lease), so
/// each change arrives once, each job's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_each_change_once() {
    if !runs_on(Engine::Postgres, "two_replicas_send_each_change_once") {
        return;
    }
    let hook = Receiver::start(UP).await;
    let dir = workspace_on(Engine::Postgres);
    let env = [
        ("COBALT_RECEIVER_WEBHOOK_SECRETS", SECRET),
        ("COBALT_RECEIVER_API_TOKENS", TOKEN),
        ("COBALT_RECEIVER_OUTBOUND_URL", hook.url.as_str()),
        ("COBALT_RECEIVER_OUTBOUND_SECRET", OUTBOUND_SECRET),
    ];
    let replicas = [start(&dir, &env, &[]), start(&dir, &env, &[])];
    const JOBS: usize = 60;
    for n in 0..JOBS {
        let (job, note) = (format!("{}", 7800 + n), format!("pn-78{n}"));
        for (step, event) in [
            failed_event(&format!("evt_r{n}a"), &job, &note, "2025-10-09T10:00:00Z"),
            created_event(&format!("evt_r{n}b"), &job, &note, "2025-10-09T10:05:00Z"),
        ]
        .into_iter()
        .enumerate()
        {
            let body = event.to_string();
            let replica = &replicas[(n + step) % 2];
            let response = replica.post(body.as_bytes(), &sign(body.as_bytes())).await;
            assert_eq!(response.status(), 200);
        }
    }
    let delivered = hook
        .wait_for_delivered(JOBS * 2, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = hook.seen();
    assert_eq!(seen.len(), JOBS * 2, "each change sent once");
    let ids: HashSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), JOBS * 2);
    let mut order: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in &delivered {
        order
            .entry(s.body["data"]["job_id"].as_str().unwrap())
            .or_default()
            .push(s.body["type"].as_str().unwrap());
    }
    assert!(
        order
            .values()
            .all(|kinds| kinds == &["job.failed", "job.created"]),
        "{order:?}"
    );
    for replica in &replicas {
        replica.terminate();
    }
}
