//! Submitting notes through the service to a fake Cobalt (a real HTTP
//! server on loopback, see `fake_cobalt`), and recovering the outcomes
//! whose delivery was lost, on both engines and with two replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cobalt_receiver::config::Config;
use cobalt_receiver::secret::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fake_cobalt::*;
use crate::helpers::*;
use crate::process::{TEST_ENV, run, start};

/// The environment of a server process with the test secret and token,
/// pointed at `cobalt`.
fn server_env(cobalt: &FakeCobalt) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&str, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect();
    env.extend(cobalt_env(cobalt));
    env
}

/// `env` as the process helpers take it.
fn refs<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `POST /v1/recoveries` with the operate token.
async fn recover(app: &TestApp, body: Option<Value>) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/v1/recoveries",
        Some(OPS_TOKEN),
        body.as_ref(),
        &[],
    )
    .await
}

/// The variables that point a server process at `cobalt`.
fn cobalt_env(cobalt: &FakeCobalt) -> Vec<(&'static str, String)> {
    vec![
        ("COBALT_RECEIVER_COBALT_API_URL", cobalt.url.clone()),
        ("COBALT_RECEIVER_COBALT_CLIENT_ID", CLIENT_ID.into()),
        ("COBALT_RECEIVER_COBALT_CLIENT_SECRET", CLIENT_SECRET.into()),
        ("COBALT_RECEIVER_COBALT_ACCESS_TOKEN", ACCESS_TOKEN.into()),
        ("COBALT_RECEIVER_COBALT_REQUESTS_PER_SEC", "200".into()),
    ]
}

fn note(n: usize, fails: bool) -> Value {
    let mrn = if fails {
        format!("{MRN}-{n}-F")
    } else {
        format!("{MRN}-{n}")
    };
    json!({ "note": NOTE_TEXT, "subject": SUBJECT, "patient_mrn": mrn, "location_id": "loc-1" })
}

async fn submit(app: &TestApp, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    app.call(
        Method::POST,
        "/v1/patient-notes",
        Some(SUBMIT_TOKEN),
        Some(body),
        &headers,
    )
    .await
}

/// Polls until no job is pending, up to `limit`.
async fn nothing_pending(app: &TestApp, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let (status, page) = app
            .get_json("/v1/patient-notes?status=pending&limit=500")
            .await;
        assert_eq!(status, 200);
        let left = page["items"].as_array().unwrap().len();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} jobs still pending after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_submitted_note_reaches_its_final_state_through_recovery() {
    let cobalt = FakeCobalt::start(None).await;
    let dir = Arc::new(workspace());
    let configure = {
        let point = point_at(&cobalt);
        move |config: &mut Config| {
            point(config);
            config.overdue_after_secs = 1;
            config.reconcile_interval_secs = 1;
        }
    };
    let a = spawn_app_in(dir.clone(), configure.clone()).await;
    // On PostgreSQL, a second replica takes half the submissions and runs
    // sweeps too (one replica at a time).
    let b = match engine() {
        Engine::Postgres => Some(spawn_app_in(dir.clone(), configure.clone()).await),
        Engine::Sqlite => None,
    };
    cobalt.set_webhook_url(Some(format!("{}/webhooks/cobalt", a.address)));
    cobalt.lose_share(0.3, 7);

    for n in 0..100 {
        let app = match &b {
            Some(b) if n % 2 == 1 => b,
            _ => &a,
        };
        let (status, job) = submit(app, &note(n, n % 5 == 0), None).await;
        assert_eq!(status, 202, "{job}");
        assert!(
            job["job_id"].is_string() && job["submitted_at"].is_string(),
            "{job}"
        );
    }
    cobalt.deliveries_settled(Duration::from_secs(30)).await;
    let lost: Vec<String> = cobalt
        .losses()
        .into_iter()
        .filter(|(_, loss)| *loss != Loss::None)
        .map(|(id, _)| id)
        .collect();
    assert!(
        (15..=45).contains(&lost.len()),
        "{} of 100 lost",
        lost.len()
    );

    nothing_pending(&a, Duration::from_secs(40)).await;

    // Every job has the outcome Cobalt gave it, each event is recorded
    // once, and the lost ones are marked recovered.
    let events = cobalt.events();
    assert_eq!(events.len(), 100);
    for event in &events {
        let job_id = event["job_id"].as_str().unwrap();
        let (status, job) = a.get_json(&format!("/v1/jobs/{job_id}")).await;
        assert_eq!(status, 200);
        let expected = event["type"]
            .as_str()
            .unwrap()
            .trim_start_matches("patient_note.");
        assert_eq!(job["status"], expected, "{job}");
        assert_eq!(job["deciding_event_id"], event["id"]);
        let (_, log) = a.get_json(&format!("/v1/jobs/{job_id}/events")).await;
        let log = log["events"].as_array().unwrap().clone();
        assert_eq!(log.len(), 1, "one event, recorded once: {log:?}");
        let source = if lost.iter().any(|id| *id == event["id"]) {
            "recovered"
        } else {
            "webhook"
        };
        assert_eq!(log[0]["source"], source, "{log:?}");
    }
    assert_eq!(a.count("events").await, 100, "no event recorded twice");
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("cobalt_receiver_pending_jobs 0"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"cobalt_receiver_cobalt_api_calls_total{call="list_events",outcome="ok"}"#)
    );
}

#[tokio::test]
async fn a_submitted_note_is_forwarded_and_its_job_expected() {
    let cobalt = FakeCobalt::start(None).await;
    let app = spawn_app_with(point_at(&cobalt)).await;
    cobalt.set_webhook_url(Some(format!("{}/webhooks/cobalt", app.address)));

    let (status, job) = submit(&app, &note(1, false), None).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "pending");
    let (job_id, note_id) = cobalt.jobs()[0].clone();
    assert_eq!(
        (job["job_id"].as_str(), job["patient_note_id"].as_str()),
        (Some(job_id.as_str()), Some(note_id.as_str()))
    );
    // Waiting for it returns with the outcome, delivered by the fake.
    let (status, done) = app.get_json(&format!("/v1/jobs/{job_id}?wait=10")).await;
    assert_eq!(
        (status.as_u16(), done["status"].as_str()),
        (200, Some("created")),
        "{done}"
    );
    assert_eq!(done["submitted_at"], job["submitted_at"]);

    // Cobalt's 4xx is relayed with its message, and nothing is expected.
    let mut missing = note(2, false);
    missing.as_object_mut().unwrap().remove("subject");
    let (status, body) = submit(&app, &missing, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "cobalt_rejected");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Missing required field: subject"),
        "{body}"
    );
    let mut elsewhere = note(3, false);
    elsewhere["location_id"] = json!("loc-9");
    let (status, body) = submit(&app, &elsewhere, None).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid location_id"),
        "{body}"
    );
    // What is not a JSON object never reaches Cobalt.
    let calls = cobalt.calls(NOTES_PATH);
    for bad in [json!([1]), json!("note")] {
        let (status, _) = submit(&app, &bad, None).await;
        assert_eq!(status, 400);
    }
    assert_eq!(cobalt.calls(NOTES_PATH), calls);
    assert_eq!(app.count("expected_jobs").await, 1);

    // Cobalt failing: 502, and the answer says the note may exist.
    cobalt.fail_next(NOTES_PATH, 500, 1);
    let (status, body) = submit(&app, &note(4, false), None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (502, Some("cobalt_failed"))
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("MAY have been created"),
        "{body}"
    );
    // A 429 is relayed as a 429.
    cobalt.fail_next(NOTES_PATH, 429, 1);
    let (status, _) = submit(&app, &note(5, false), None).await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_return_the_first_answer() {
    let cobalt = FakeCobalt::start(None).await;
    let app = spawn_app_with(point_at(&cobalt)).await;

    let body = note(1, false);
    let (status, first) = submit(&app, &body, Some("key-1")).await;
    assert_eq!(status, 202);
    let (status, again) = submit(&app, &body, Some("key-1")).await;
    assert_eq!(status, 202);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(
        cobalt.calls(NOTES_PATH),
        1,
        "the retry created no second note"
    );
    // The same key with another body is refused.
    let (status, body_) = submit(&app, &note(2, false), Some("key-1")).await;
    assert_eq!(status, 422, "{body_}");

    // While the first is in flight, a retry is 409.
    cobalt.stall(NOTES_PATH, Duration::from_millis(1_200));
    let slow = {
        let (client, url, body) = (
            app.client.clone(),
            format!("{}/v1/patient-notes", app.address),
            note(3, false),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(SUBMIT_TOKEN)
                .header("idempotency-key", "key-2")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, busy) = submit(&app, &note(3, false), Some("key-2")).await;
    assert_eq!(status, 409, "{busy}");
    assert!(
        busy["detail"].as_str().unwrap().contains("still waiting"),
        "{busy}"
    );
    assert_eq!(slow.await.unwrap(), 202);
    let (status, _) = submit(&app, &note(3, false), Some("key-2")).await;
    assert_eq!(status, 202);
    assert_eq!(cobalt.calls(NOTES_PATH), 2);

    // A timeout leaves the note's fate unknown: 504, then 409 for the key.
    cobalt.stall(NOTES_PATH, Duration::from_secs(4));
    let (status, timed_out) = submit(&app, &note(4, false), Some("key-3")).await;
    assert_eq!(
        (status.as_u16(), timed_out["code"].as_str()),
        (504, Some("cobalt_timeout")),
        "{timed_out}"
    );
    assert!(
        timed_out["detail"]
            .as_str()
            .unwrap()
            .contains("MAY have been created")
    );
    cobalt.stall(NOTES_PATH, Duration::ZERO);
    let (status, unknown) = submit(&app, &note(4, false), Some("key-3")).await;
    assert_eq!(status, 409, "{unknown}");
    assert!(
        unknown["detail"]
            .as_str()
            .unwrap()
            .contains("may have created"),
        "{unknown}"
    );

    // A rejected note frees its key: the corrected retry goes through.
    let mut missing = note(5, false);
    missing.as_object_mut().unwrap().remove("note");
    let (status, _) = submit(&app, &missing, Some("key-4")).await;
    assert_eq!(status, 400);
    let (status, _) = submit(&app, &missing, Some("key-4")).await;
    assert_eq!(status, 400, "a 4xx is no answer to keep");

    // No note text or subject is stored by a submission.
    let dump = database_text(&app).await;
    assert!(
        !dump.contains(NOTE_TEXT) && !dump.contains(SUBJECT),
        "a submission stored the note"
    );
}

#[tokio::test]
async fn cobalt_unreachable_or_refusing_the_credentials_is_a_502_that_says_no_note_was_made() {
    let cobalt = FakeCobalt::start(None).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{address}")
    };
    let point = point_at(&cobalt);
    let unreachable = spawn_app_with(move |config| {
        point(config);
        config.cobalt_api_url = closed;
    })
    .await;
    let (status, body) = submit(&unreachable, &note(1, false), Some("key-u")).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (502, Some("cobalt_unreachable")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("was not created"));
    // The key is free again: the note was certainly not created.
    let (status, body) = submit(&unreachable, &note(1, false), Some("key-u")).await;
    assert_eq!(status, 502, "{body}");

    let point = point_at(&cobalt);
    let refused = spawn_app_with(move |config| {
        point(config);
        config.cobalt_client_secret = Some(Secret::new("cs_wrong_secret_for_test"));
    })
    .await;
    let (status, body) = submit(&refused, &note(2, false), None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (502, Some("cobalt_unauthorized")),
        "{body}"
    );
    assert!(!body.to_string().contains("cs_wrong_secret_for_test"));
    assert_eq!(cobalt.unauthorized_calls(), 1);
}

#[tokio::test]
async fn recovery_reads_both_shapes_every_page_and_only_what_it_was_asked() {
    let cobalt = FakeCobalt::start(None).await;
    let app = spawn_app_with(point_at(&cobalt)).await;
    cobalt.set_shape(Shape::B);
    // 120 lost outcomes of jobs never registered here (more than a page),
    // and an event of another type.
    for n in 0..120 {
        let event = if n % 3 == 0 {
            failed_event(
                &format!("evt_lost_{n}"),
                &format!("{}", 30_000 + n),
                &format!("pn-l{n}"),
                "2026-11-27T08:00:00Z",
            )
        } else {
            created_event(
                &format!("evt_lost_{n}"),
                &format!("{}", 30_000 + n),
                &format!("pn-l{n}"),
                "2026-11-27T08:00:00Z",
            )
        };
        cobalt.add_event(event, "failed");
    }
    let mut other = created_event("evt_other", "39999", "pn-o", "2026-11-27T08:00:00Z");
    other["type"] = json!("appointment.created");
    cobalt.add_event(other, "failed");

    let (status, report) = recover(&app, Some(json!({ "since": "2026-11-26" }))).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["recovered"], 120, "{report}");
    assert_eq!(report["already_known"], 0);
    assert_eq!(report["errors"], json!([]));
    assert_eq!(report["since"], "2026-11-26");
    assert_eq!(
        app.count("events").await,
        120,
        "shape B's second rows and other types are not recorded"
    );
    let (_, job) = app.get_json("/v1/jobs/30001").await;
    assert_eq!(job["status"], "created");
    let (_, job) = app.get_json("/v1/jobs/30000").await;
    assert_eq!(job["status"], "failed");
    // The queries asked for what was meant: both types, failed deliveries,
    // the window, every page.
    let queries = cobalt.event_queries();
    for part in [
        "delivery_status=failed",
        "start_date=2026-11-26",
        "event_type=patient_note.created",
        "event_type=patient_note.failed",
        "page=2",
    ] {
        assert!(
            queries.iter().any(|q| q.contains(part)),
            "no query with {part}: {queries:?}"
        );
    }

    // A second run finds them all known, changes nothing.
    cobalt.set_shape(Shape::A);
    let (_, again) = recover(&app, Some(json!({ "since": "2026-11-26" }))).await;
    assert_eq!(
        (again["recovered"].as_u64(), again["already_known"].as_u64()),
        (Some(0), Some(120)),
        "{again}"
    );
    assert_eq!(app.count("events").await, 120);

    // Asked about one job: that job's events only.
    cobalt.add_event(
        created_event("evt_single", "40001", "pn-s", "2026-11-27T09:00:00Z"),
        "success",
    );
    let (_, single) = recover(
        &app,
        Some(json!({ "job_ids": ["40001"], "since": "2026-11-27" })),
    )
    .await;
    assert_eq!(single["jobs_asked"], 1);
    assert_eq!(single["recovered"], 1, "{single}");
    assert!(
        cobalt
            .event_queries()
            .iter()
            .any(|q| q.contains("job_id=40001"))
    );
    // `null`, which the OpenAPI document allows, is no body.
    let (status, report) = recover(&app, Some(Value::Null)).await;
    assert_eq!(status, 200, "{report}");
    // Bad requests are 400.
    for bad in [
        json!({ "since": "yesterday" }),
        json!({ "job_ids": "40001" }),
        json!({ "jobs": [] }),
    ] {
        let (status, _) = recover(&app, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn recovery_rides_out_cobalt_errors_keeps_deliveries_fast_and_logs_no_credential() {
    let cobalt = FakeCobalt::start(None).await;
    // Within the automatic sweep's lookback (two days), whatever today is.
    let an_hour_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for n in 0..3 {
        cobalt.add_event(
            created_event(
                &format!("evt_e{n}"),
                &format!("{}", 50_000 + n),
                &format!("pn-e{n}"),
                &an_hour_ago,
            ),
            "failed",
        );
    }
    // 500, 500, 429, then a page: retried with backoff within one sweep.
    cobalt.fail_next(EVENTS_PATH, 500, 2);
    cobalt.fail_next(EVENTS_PATH, 429, 1);
    cobalt.malformed_next(1);
    cobalt.stall(EVENTS_PATH, Duration::from_millis(300));
    let dir = workspace();
    let mut env = server_env(&cobalt);
    env.push(("COBALT_RECEIVER_RECONCILE_INTERVAL_SECS", "1".into()));
    env.push(("RUST_LOG", "debug".into()));
    let env_refs = refs(&env);
    let server = start(&dir, &env_refs, &[]);

    // Deliveries during the sweeps are answered at once.
    let mut slowest = Duration::ZERO;
    for n in 0..30 {
        let body = failed_event(
            &format!("evt_d{n}"),
            &format!("{}", 60_000 + n),
            "pn-d",
            "2026-11-27T08:00:00Z",
        )
        .to_string();
        let started = Instant::now();
        assert_eq!(
            server
                .post(body.as_bytes(), &sign(body.as_bytes()))
                .await
                .status(),
            200
        );
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a delivery took {slowest:?} during recovery"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/v1/jobs/50002", TOKEN).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "not recovered:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in 0..3 {
        assert_eq!(
            server
                .get(&format!("/v1/jobs/{}", 50_000 + n), TOKEN)
                .await
                .status(),
            200
        );
    }
    let metrics = server.get("/metrics", TOKEN).await.text().await.unwrap();
    for outcome in ["server_error", "rate_limited", "malformed", "ok"] {
        let line = format!(
            r#"cobalt_receiver_cobalt_api_calls_total{{call="list_events",outcome="{outcome}"}} 0"#
        );
        assert!(
            metrics.contains(r#"call="list_events""#) && !metrics.contains(&line),
            "no {outcome} call counted: {metrics}"
        );
    }
    let log = server.log();
    for secret in [CLIENT_ID, CLIENT_SECRET, ACCESS_TOKEN, NOTE_TEXT, SUBJECT] {
        assert!(!log.contains(secret), "the log carries {secret}");
    }
}

#[tokio::test]
async fn refused_credentials_stop_recovery_with_one_log_line_and_a_metric() {
    let cobalt = FakeCobalt::start(None).await;
    cobalt.add_event(
        created_event("evt_r1", "70001", "pn-r1", "2026-11-27T08:00:00Z"),
        "failed",
    );
    let dir = workspace();
    let mut env = server_env(&cobalt);
    env.push((
        "COBALT_RECEIVER_COBALT_ACCESS_TOKEN",
        "at_revoked_token_for_test".into(),
    ));
    env.push(("COBALT_RECEIVER_RECONCILE_INTERVAL_SECS", "1".into()));
    let env_refs = refs(&env);
    let server = start(&dir, &env_refs, &[]);
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert!(cobalt.unauthorized_calls() >= 2, "sweeps kept running");
    let log = server.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("Cobalt refused the credentials"))
        .count();
    assert_eq!(refusals, 1, "{log}");
    assert!(
        !log.contains("at_revoked_token_for_test") && !log.contains(CLIENT_SECRET),
        "{log}"
    );
    let metrics = server.get("/metrics", TOKEN).await.text().await.unwrap();
    assert!(
        !metrics.contains(
            r#"cobalt_receiver_cobalt_api_calls_total{call="list_events",outcome="unauthorized"} 0"#
        ),
        "{metrics}"
    );
    assert_eq!(server.get("/v1/jobs/70001", TOKEN).await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_command_runs_one_sweep_and_prints_what_it_found() {
    let cobalt = FakeCobalt::start(None).await;
    cobalt.add_event(
        created_event("evt_c1", "80001", "pn-c1", "2025-10-09T10:00:00Z"),
        "success",
    );
    cobalt.add_event(
        failed_event("evt_c2", "80002", "pn-c2", "2025-10-09T10:00:00Z"),
        "failed",
    );
    let dir = workspace();
    let env = server_env(&cobalt);
    let env_refs = refs(&env);
    // The command blocks this thread; the fake serves on the others.
    let args = ["reconcile", "--job-id", "80001", "--since", "2025-10-09"];
    let (status, output) = tokio::task::block_in_place(|| run(&dir, &env_refs, &args));
    assert!(status.success(), "{output}");
    let report: Value = serde_json::from_str(&output[output.find('{').unwrap()..]).unwrap();
    assert_eq!(report["jobs_asked"], 1, "{report}");
    assert_eq!(
        report["recovered"], 2,
        "the job asked about and the failed delivery: {report}"
    );
    assert_eq!(report["since"], "2025-10-09");
    let app = spawn_app_in(Arc::new(dir), |_| {}).await;
    let (_, job) = app.get_json("/v1/jobs/80001").await;
    assert_eq!(job["status"], "created");
    let (_, events) = app.get_json("/v1/jobs/80002/events").await;
    assert_eq!(events["events"][0]["source"], "recovered");

    // Without credentials it says what is missing, exit 1.
    let (status, output) =
        tokio::task::block_in_place(|| run(&workspace(), &TEST_ENV, &["reconcile"]));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("cobalt_client_id"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cobalt_that_cannot_be_reached_is_named_by_url_and_cause() {
    let cobalt = FakeCobalt::start(None).await;
    // A loopback port nothing listens on, once the fake has freed it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut env = server_env(&cobalt);
    env.retain(|(key, _)| *key != "COBALT_RECEIVER_COBALT_API_URL");
    env.push(("COBALT_RECEIVER_COBALT_API_URL", nowhere.clone()));
    let env_refs = refs(&env);
    let (status, output) =
        tokio::task::block_in_place(|| run(&workspace(), &env_refs, &["reconcile"]));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!(
            "Cobalt could not be reached at {nowhere}/v1/webhook-events: connection refused"
        )),
        "{output}"
    );
}

#[tokio::test]
async fn a_failed_note_leaves_no_note_text_anywhere_and_logs_never_carry_it() {
    let cobalt = FakeCobalt::start(None).await;
    let dir = workspace();
    let mut env = server_env(&cobalt);
    env.push((
        "COBALT_RECEIVER_API_TOKENS",
        format!("clinic-app:read+submit:{SUBMIT_TOKEN}"),
    ));
    env.push(("COBALT_RECEIVER_COBALT_TIMEOUT_MS", "1000".into()));
    env.push(("RUST_LOG", "debug".into()));
    let env_refs = refs(&env);
    let server = start(&dir, &env_refs, &[]);
    cobalt.set_webhook_url(Some(format!("{}/webhooks/cobalt", server.address)));
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let client = client.clone();
        let url = format!("{}/v1/patient-notes", server.address);
        async move {
            let response = client
                .post(url)
                .bearer_auth(SUBMIT_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        }
    };
    // A failing note, a rejected one, one that times out: none echoes the text.
    let (status, body) = post(note(1, true)).await;
    assert_eq!(status, 202, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    let mut rejected = note(2, false);
    rejected["location_id"] = json!("loc-9");
    cobalt.stall(NOTES_PATH, Duration::from_secs(3));
    let (status, body) = post(note(3, true)).await;
    assert_eq!(status, 504);
    assert!(!body.contains(NOTE_TEXT) && !body.contains(SUBJECT));
    cobalt.stall(NOTES_PATH, Duration::ZERO);
    let (status, body) = post(rejected).await;
    assert_eq!(status, 400);
    assert!(!body.contains(NOTE_TEXT) && !body.contains(SUBJECT) && !body.contains(MRN));

    let waited = server
        .get(
            &format!("/v1/jobs/{}?wait=10", job["job_id"].as_str().unwrap()),
            SUBMIT_TOKEN,
        )
        .await;
    let waited: Value = waited.json().await.unwrap();
    assert_eq!(waited["status"], "failed", "{waited}");
    cobalt.deliveries_settled(Duration::from_secs(10)).await;
    server.terminate();

    let log = server.log();
    assert!(
        log.contains("note submitted to Cobalt") && log.contains("clinic-app"),
        "the log names the token: {log}"
    );
    for secret in [
        NOTE_TEXT,
        SUBJECT,
        MRN,
        SUBMIT_TOKEN,
        CLIENT_SECRET,
        ACCESS_TOKEN,
    ] {
        assert!(!log.contains(secret), "the log carries {secret}");
    }
    // Only failed outcomes here: the note text and subject are nowhere in
    // the database.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = spawn_app_in(Arc::new(dir), |_| {}).await;
    let dump = database_text(&app).await;
    assert!(
        dump.contains(job["job_id"].as_str().unwrap()),
        "the dump is real"
    );
    assert!(
        !dump.contains(NOTE_TEXT) && !dump.contains(SUBJECT),
        "a failed note left its text in the database"
    );
}

/// Every stored value of every table, as text (SQLite: the files' bytes).
async fn database_text(app: &TestApp) -> String {
    match app.engine() {
        Engine::Sqlite => {
            let path = app.sqlite_path();
            let mut text = String::new();
            for file in [path.clone(), path.with_extension("db-wal")] {
                if let Ok(bytes) = std::fs::read(&file) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            text
        }
        Engine::Postgres => {
            let sql = app.sql().await;
            let tables: Vec<String> = sqlx::query_scalar(
                "select table_name::text from information_schema.tables where table_schema = 'public'",
            )
            .fetch_all(&sql)
            .await
            .unwrap();
            let mut text = String::new();
            for table in tables {
                let rows: Option<String> =
                    sqlx::query_scalar(&format!("select string_agg(t::text, ' ') from {table} t"))
                        .fetch_one(&sql)
                        .await
                        .unwrap();
                text.push_str(&rows.unwrap_or_default());
            }
            text
        }
    }
}

#[tokio::test]
async fn overdue_jobs_are_asked_about_oldest_first_a_bounded_number_per_sweep() {
    let cobalt = FakeCobalt::start(None).await;
    let point = point_at(&cobalt);
    let app = spawn_app_with(move |config| {
        point(config);
        config.reconcile_max_jobs = 2;
    })
    .await;
    // Three overdue jobs whose outcomes Cobalt lists as delivered (to
    // another URL, say): only asking about each job finds them.
    for (n, age) in [(1, 7200), (2, 5400), (3, 3600)] {
        let job = format!("{}", 90_000 + n);
        let submitted = (time::OffsetDateTime::now_utc() - time::Duration::seconds(age))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let (status, _) = app
            .register(
                &job,
                json!({ "patient_note_id": format!("pn-o{n}"), "submitted_at": submitted }),
            )
            .await;
        assert_eq!(status, 201);
        cobalt.add_event(
            created_event(
                &format!("evt_o{n}"),
                &job,
                &format!("pn-o{n}"),
                "2026-11-27T08:00:00Z",
            ),
            "success",
        );
    }
    let sweep = || recover(&app, None);
    let (status, first) = sweep().await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["jobs_asked"].as_u64(), first["recovered"].as_u64()),
        (Some(2), Some(2)),
        "{first}"
    );
    let asked: Vec<String> = cobalt
        .event_queries()
        .into_iter()
        .filter(|q| q.contains("job_id="))
        .collect();
    assert!(
        asked[0].contains("job_id=90001") && asked[1].contains("job_id=90002"),
        "{asked:?}"
    );
    let (_, third) = app.get_json("/v1/jobs/90003").await;
    assert_eq!(third["status"], "pending");
    assert_eq!(third["overdue"], true);
    // The next sweep takes the one left.
    let (_, second) = sweep().await;
    assert_eq!(
        (second["jobs_asked"].as_u64(), second["recovered"].as_u64()),
        (Some(1), Some(1)),
        "{second}"
    );
    let (_, third) = app.get_json("/v1/jobs/90003").await;
    assert_eq!(third["status"], "created");
}

#[tokio::test]
async fn each_linked_account_is_swept_and_submitted_to_with_its_own_token() {
    let cobalt = FakeCobalt::start(None).await;
    cobalt.add_account("at_test_second_account", "user_second");
    let point = point_at(&cobalt);
    let app = spawn_app_with(move |config| {
        point(config);
        config.cobalt_access_tokens = vec![Secret::new("user_second:at_test_second_account")];
    })
    .await;
    let mut second = created_event("evt_acc2", "91002", "pn-acc2", "2026-11-27T08:00:00Z");
    second["access_token_reference_id"] = json!("user_second");
    cobalt.add_event(second, "failed");
    cobalt.add_event(
        created_event("evt_acc1", "91001", "pn-acc1", "2026-11-27T08:00:00Z"),
        "failed",
    );
    let (_, report) = recover(&app, Some(json!({ "since": "2026-11-26" }))).await;
    assert_eq!(
        report["recovered"], 2,
        "both accounts' lists were read: {report}"
    );
    let (_, job) = app.get_json("/v1/jobs/91002").await;
    assert_eq!(job["access_token_reference_id"], "user_second");

    // A submission names its account; the job remembers it.
    let (status, job) = app
        .call(
            Method::POST,
            "/v1/patient-notes?access_token_reference_id=user_second",
            Some(SUBMIT_TOKEN),
            Some(&note(1, false)),
            &[],
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["access_token_reference_id"], "user_second");
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/patient-notes?access_token_reference_id=nobody",
            Some(SUBMIT_TOKEN),
            Some(&note(2, false)),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(cobalt.calls(NOTES_PATH), 1);
    assert_eq!(
        cobalt.unauthorized_calls(),
        0,
        "each account's calls carried its own token"
    );
}

#[tokio::test]
async fn calls_to_cobalt_s_event_list_are_paced() {
    let cobalt = FakeCobalt::start(None).await;
    let point = point_at(&cobalt);
    let app = spawn_app_with(move |config| {
        point(config);
        config.cobalt_requests_per_sec = 4;
    })
    .await;
    for n in 0..6 {
        let submitted = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        app.register(
            &format!("{}", 92_000 + n),
            json!({ "patient_note_id": "pn-p", "submitted_at": submitted }),
        )
        .await;
    }
    // Six job queries and two listings: eight calls at four a second.
    let started = Instant::now();
    let (_, report) = recover(&app, None).await;
    let took = started.elapsed();
    assert_eq!(
        (report["jobs_asked"].as_u64(), report["pages_read"].as_u64()),
        (Some(6), Some(8)),
        "{report}"
    );
    assert!(
        took >= Duration::from_millis(1_700),
        "8 calls at 4/s took {took:?}"
    );
}

#[tokio::test]
async fn with_two_replicas_one_sweeps_per_interval() {
    if !runs_on(
        Engine::Postgres,
        "with_two_replicas_one_sweeps_per_interval",
    ) {
        return;
    }
    let cobalt = FakeCobalt::start(None).await;
    let dir = Arc::new(workspace());
    let configure = {
        let point = point_at(&cobalt);
        move |config: &mut Config| {
            point(config);
            config.reconcile_interval_secs = 1;
        }
    };
    let replicas = [
        spawn_app_in(dir.clone(), configure.clone()).await,
        spawn_app_in(dir.clone(), configure.clone()).await,
    ];
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    // Each sweep lists the failed deliveries of created notes once.
    let sweeps = cobalt
        .event_queries()
        .iter()
        .filter(|q| q.contains("event_type=patient_note.created"))
        .count();
    // One sweep a second between the two: about 4, where two replicas
    // sweeping on their own would make about 8.
    assert!((2..=5).contains(&sweeps), "{sweeps} sweeps in 4.5 s");
    drop(replicas);
}
