//! The fake itself: if it drifts from the documented Cobalt, every test
//! built on it proves less.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::losses::LOSS_CYCLE;
use super::*;
use crate::helpers;

const SETTLE: Duration = Duration::from_secs(3);

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn note(mrn: &str) -> Value {
    json!({
        "note": helpers::NOTE_TEXT,
        "subject": helpers::SUBJECT,
        "patient_mrn": mrn,
        "location_id": "loc-1",
    })
}

fn with_credentials(request: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    request
        .header("client_id", CLIENT_ID)
        .header("client_secret", CLIENT_SECRET)
        .header("access_token", token)
}

/// Submits a note; returns the answer's status and body.
async fn submit(fake: &FakeCobalt, body: &Value) -> (StatusCode, Value) {
    let request = client()
        .post(format!("{}{NOTES_PATH}", fake.url))
        .json(body);
    let response = with_credentials(request, ACCESS_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Submits a valid note; returns its job id (a JSON integer on this route).
async fn submit_ok(fake: &FakeCobalt, mrn: &str) -> u64 {
    let (status, body) = submit(fake, &note(mrn)).await;
    assert_eq!(status, 200, "{body}");
    body["job_id"].as_u64().expect("job_id is an integer")
}

async fn list_as(fake: &FakeCobalt, query: &str, token: &str) -> (StatusCode, Value) {
    let request = client().get(format!("{}{EVENTS_PATH}?{query}", fake.url));
    let response = with_credentials(request, token).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn list(fake: &FakeCobalt, query: &str) -> (StatusCode, Value) {
    list_as(fake, query, ACCESS_TOKEN).await
}

fn rows(body: &Value) -> &Vec<Value> {
    body["webhook_events"].as_array().expect("a list of events")
}

/// A webhook receiver that records what it gets and answers the queued
/// statuses, then 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn start_receiver(answers: Vec<u16>) -> Receiver {
    type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;
    let got: Got = Arc::default();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let router = Router::new().route(
        "/webhooks/cobalt",
        post(
            |State((got, answers)): State<(Got, Arc<Mutex<VecDeque<u16>>>)>,
             headers: HeaderMap,
             body: Bytes| async move {
                got.lock().unwrap().push((headers, body));
                let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                StatusCode::from_u16(status).unwrap()
            },
        ),
    );
    let router = router.with_state((got.clone(), answers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/cobalt", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Receiver { url, got }
}

impl Receiver {
    fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused() {
    let fake = FakeCobalt::start(None).await;
    let refused = json!({ "success": false, "message": "Invalid credentials" });

    let response = client()
        .post(format!("{}{NOTES_PATH}", fake.url))
        .header("client_id", CLIENT_ID)
        .header("client_secret", "cs_wrong")
        .header("access_token", ACCESS_TOKEN)
        .json(&note("MRN-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap(), refused);

    let response = client()
        .get(format!("{}{EVENTS_PATH}", fake.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap(), refused);

    let (status, _) = list_as(&fake, "", "at_unknown").await;
    assert_eq!(status, 401);

    assert_eq!(fake.unauthorized_calls(), 3);
    assert_eq!(fake.calls(NOTES_PATH), 1);
    assert_eq!(fake.calls(EVENTS_PATH), 2);
    assert!(fake.jobs().is_empty(), "a refused note is not accepted");
}

#[tokio::test]
async fn a_note_is_validated_like_cobalt_does() {
    let fake = FakeCobalt::start(None).await;
    let mut body = note("MRN-1");
    body.as_object_mut().unwrap().remove("subject");
    body["patient_mrn"] = json!("");
    let (status, answer) = submit(&fake, &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({ "success": false, "message": "Missing required field: subject" })
    );

    let mut body = note("MRN-1");
    body["location_id"] = json!("loc-9");
    let (status, answer) = submit(&fake, &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["message"],
        "Invalid location_id. Must be one of: loc-1, loc-2"
    );
    assert!(fake.jobs().is_empty());

    let (status, answer) = submit(&fake, &note("MRN-1")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["success"], true);
    assert_eq!(answer["job_id"], 10001);
    let note_id = answer["patient_note_id"].as_str().unwrap();
    assert_eq!(note_id.len(), 24);
    assert!(
        note_id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(fake.jobs(), vec![("10001".to_owned(), note_id.to_owned())]);
}

#[tokio::test]
async fn an_outcome_is_listed_by_job_id_in_both_shapes() {
    let fake = FakeCobalt::start(None).await;
    fake.set_outcome_delay(Duration::from_millis(20));
    let created_job = submit_ok(&fake, "MRN-1").await;
    let failed_job = submit_ok(&fake, "MRN-2-F").await;
    fake.deliveries_settled(SETTLE).await;

    let (status, body) = list(&fake, &format!("job_id={created_job}")).await;
    assert_eq!(status, 200);
    let listed = rows(&body);
    assert_eq!(listed.len(), 1);
    let event = &listed[0];
    assert_eq!(event["job_id"], created_job.to_string(), "a string here");
    assert_eq!(event["type"], "patient_note.created");
    assert_eq!(event["object"], "event");
    assert_eq!(event["access_token_reference_id"], REFERENCE_ID);
    assert_eq!(event["data"]["patient_mrn"], "MRN-1");
    assert_eq!(event["data"]["note"], helpers::NOTE_TEXT);
    assert_eq!(event["data"]["patient_note_id"], fake.jobs()[0].1);
    assert_eq!(event["status"], "failed", "never delivered: no webhook URL");
    assert_eq!(event["delivered"], false);
    assert_eq!(event["delivery_attempts"], 0);
    assert!(OffsetDateTime::parse(event["created"].as_str().unwrap(), &Rfc3339).is_ok());
    assert_eq!(
        body["pagination"],
        json!({ "current_page": 1, "total_pages": 1, "total_count": 1, "page_size": 50 })
    );
    // The envelope as delivered is a prefix of the row.
    let envelope = fake.events()[0].clone();
    for (key, value) in envelope.as_object().unwrap() {
        assert_eq!(&event[key], value, "{key}");
    }

    let (_, body) = list(&fake, &format!("job_id={failed_job}")).await;
    let data = &rows(&body)[0]["data"];
    assert_eq!(rows(&body)[0]["type"], "patient_note.failed");
    assert_eq!(data["failure_reason"], FAILURE_REASON);

    fake.set_shape(Shape::B);
    let (status, body) = list(&fake, &format!("job_id={created_job}")).await;
    assert_eq!(status, 200);
    let listed = rows(&body);
    assert_eq!(listed.len(), 2, "once per registered URL");
    assert_eq!(listed[0]["event_id"], envelope["id"]);
    assert_eq!(listed[1]["event_id"], envelope["id"]);
    assert_eq!(listed[0]["webhook_url"], DEFAULT_WEBHOOK_URL);
    assert_eq!(listed[1]["webhook_url"], STAGING_WEBHOOK_URL);
    assert_eq!(listed[0]["event_type"], "patient_note.created");
    assert_eq!(listed[0]["job_id"], created_job.to_string());
    assert_eq!(listed[0]["created_at"], envelope["created"]);
    assert_eq!(listed[0]["delivery_status"], "failed");
    assert_eq!(listed[0]["data"], envelope["data"]);
    assert_eq!(body["pagination"]["total_count"], 2);
}

#[tokio::test]
async fn the_list_filters_sorts_and_pages() {
    let fake = FakeCobalt::start(None).await;
    fake.set_outcome_delay(Duration::ZERO);
    for mrn in ["MRN-1", "MRN-2-F", "MRN-3", "MRN-4-F", "MRN-5"] {
        submit_ok(&fake, mrn).await;
        fake.deliveries_settled(SETTLE).await; // one after the other
    }
    let mut delivered =
        helpers::created_event("evt_added", "777", "n777", "2026-01-02T23:30:00-02:00");
    delivered
        .as_object_mut()
        .unwrap()
        .remove("access_token_reference_id");
    fake.add_event(delivered, "success");
    fake.add_account("at_other", "user_other");
    let mut other = helpers::failed_event("evt_other", "888", "n888", "2026-01-01T00:00:00Z");
    other["access_token_reference_id"] = json!("user_other");
    fake.add_event(other, "failed");

    let (_, body) = list(&fake, "page_size=2").await;
    assert_eq!(
        body["pagination"],
        json!({ "current_page": 1, "total_pages": 3, "total_count": 6, "page_size": 2 })
    );
    let newest_first: Vec<&Value> = rows(&body).iter().map(|r| &r["job_id"]).collect();
    assert_eq!(newest_first, [&json!("10005"), &json!("10004")]);
    let (_, body) = list(&fake, "page_size=2&page=3").await;
    assert_eq!(rows(&body)[1]["id"], "evt_added", "the oldest is last");
    let (_, body) = list(&fake, "page_size=2&page=4").await;
    assert!(rows(&body).is_empty());
    assert_eq!(body["pagination"]["current_page"], 4);
    let (_, body) = list(&fake, "sort=created_at&page_size=1").await;
    assert_eq!(rows(&body)[0]["id"], "evt_added");

    let (_, body) = list(&fake, "event_type=patient_note.failed").await;
    let jobs: Vec<&Value> = rows(&body).iter().map(|r| &r["job_id"]).collect();
    assert_eq!(jobs, [&json!("10004"), &json!("10002")]);
    let (_, body) = list(&fake, "delivery_status=success").await;
    assert_eq!(rows(&body).len(), 1);
    assert_eq!(rows(&body)[0]["id"], "evt_added");
    let (_, body) = list(&fake, "status=failed&job_id=10003").await;
    assert_eq!(rows(&body).len(), 1);
    // 23:30 at -02:00 is the 3rd in UTC.
    let (_, body) = list(&fake, "start_date=2026-01-03&end_date=2026-01-03").await;
    assert_eq!(rows(&body)[0]["id"], "evt_added");
    assert_eq!(body["pagination"]["total_count"], 1);
    let (_, body) = list(&fake, "start_date=2999-01-01").await;
    assert_eq!(
        body["pagination"],
        json!({ "current_page": 1, "total_pages": 1, "total_count": 0, "page_size": 50 })
    );

    // Each account sees only its own events.
    let (_, body) = list_as(&fake, "", "at_other").await;
    assert_eq!(rows(&body).len(), 1);
    assert_eq!(rows(&body)[0]["id"], "evt_other");

    for bad in [
        "page_size=101",
        "page_size=0",
        "page=0",
        "page=x",
        "sort=created",
        "delivery_status=lost",
        "start_date=2026-13-01",
    ] {
        let (status, body) = list(&fake, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["success"], false, "{bad}");
    }
    let (status, _) = list(&fake, "page_size=100").await;
    assert_eq!(status, 200);
    assert_eq!(fake.event_queries()[0], "page_size=2");
}

#[tokio::test]
async fn outcomes_are_delivered_signed_as_cobalt_does() {
    let receiver = start_receiver(vec![]).await;
    let fake = FakeCobalt::start(Some(receiver.url.clone())).await;
    fake.lose_share(0.0, 1);
    fake.set_outcome_delay(Duration::from_millis(10));
    submit_ok(&fake, "MRN-1").await;
    submit_ok(&fake, "MRN-2-F").await;
    fake.deliveries_settled(SETTLE).await;

    assert_eq!(fake.webhook_url().as_deref(), Some(receiver.url.as_str()));
    assert_eq!(fake.deliveries(), (2, 2));
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let verifier =
        cobalt_receiver::signature::Verifier::new(vec![cobalt_receiver::secret::Secret::new(
            helpers::SECRET,
        )]);
    for (headers, body) in &received {
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["webhook-id"], event["id"].as_str().unwrap());
        assert_eq!(
            headers["webhook-timestamp"],
            event["created"].as_str().unwrap()
        );
        assert_eq!(headers["webhook-attempt"], "1");
        let signature = headers["cobalt-verification"].as_bytes();
        assert_eq!(verifier.verify(Some(signature), body), Ok(()));
        assert_eq!(signature, helpers::sign(body).as_bytes());
        assert!(fake.events().contains(&event), "delivered as listed");
        assert_eq!(
            fake.delivery_status(event["id"].as_str().unwrap())
                .as_deref(),
            Some("success")
        );
    }
    let (_, body) = list(&fake, "").await;
    assert!(
        rows(&body)
            .iter()
            .all(|r| r["delivered"] == true && r["response_status_code"] == 200)
    );
    assert!(fake.losses().iter().all(|(_, loss)| *loss == Loss::None));
}

#[tokio::test]
async fn lost_deliveries_never_reach_the_receiver() {
    let receiver = start_receiver(vec![]).await;
    let fake = FakeCobalt::start(Some(receiver.url.clone())).await;
    fake.lose_share(1.0, 42);
    fake.set_outcome_delay(Duration::ZERO);
    for mrn in ["MRN-1", "MRN-2", "MRN-3", "MRN-4"] {
        submit_ok(&fake, mrn).await;
    }
    fake.deliveries_settled(SETTLE).await;

    assert!(receiver.received().is_empty());
    assert_eq!(fake.deliveries(), (0, 0));
    let mut modes: Vec<Loss> = fake.losses().into_iter().map(|(_, loss)| loss).collect();
    modes.sort_by_key(|loss| LOSS_CYCLE.iter().position(|l| l == loss));
    assert_eq!(
        modes,
        [
            Loss::NoAnswer,
            Loss::NoAnswer,
            Loss::Timeout,
            Loss::ServerErrorThenLostRetry
        ]
    );
    let (_, body) = list(&fake, "delivery_status=failed").await;
    assert_eq!(body["pagination"]["total_count"], 4);
}

#[tokio::test]
async fn the_same_seed_loses_the_same_notes() {
    async fn lost_jobs(seed: u64) -> Vec<bool> {
        let receiver = start_receiver(vec![]).await;
        let fake = FakeCobalt::start(Some(receiver.url)).await;
        fake.lose_share(0.5, seed);
        fake.set_outcome_delay(Duration::ZERO);
        for i in 0..12 {
            submit_ok(&fake, &format!("MRN-{i}")).await;
        }
        fake.deliveries_settled(SETTLE).await;
        let losses: HashMap<String, Loss> = fake.losses().into_iter().collect();
        let (attempts, acknowledged) = fake.deliveries();
        let sent = losses.values().filter(|l| **l == Loss::None).count();
        assert_eq!((attempts, acknowledged), (sent, sent));
        // In job order, whatever order the outcomes were created in.
        let by_note: HashMap<String, Loss> = fake
            .events()
            .iter()
            .map(|e| {
                let note_id = e["data"]["patient_note_id"].as_str().unwrap().to_owned();
                (note_id, losses[e["id"].as_str().unwrap()])
            })
            .collect();
        fake.jobs()
            .iter()
            .map(|(_, note_id)| by_note[note_id] != Loss::None)
            .collect()
    }
    let first = lost_jobs(7).await;
    assert_eq!(first, lost_jobs(7).await);
    let lost = first.iter().filter(|l| **l).count();
    assert!((1..12).contains(&lost), "about half: {lost} of 12");
}

#[tokio::test]
async fn a_503_is_retried_once_and_a_400_is_not() {
    let receiver = start_receiver(vec![503, 200, 400]).await;
    let fake = FakeCobalt::start(Some(receiver.url.clone())).await;
    fake.set_outcome_delay(Duration::ZERO);
    submit_ok(&fake, "MRN-1").await;
    fake.deliveries_settled(SETTLE).await;
    submit_ok(&fake, "MRN-2").await;
    fake.deliveries_settled(SETTLE).await;

    let attempts: Vec<String> = receiver
        .received()
        .iter()
        .map(|(h, _)| h["webhook-attempt"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "1"]);
    assert_eq!(fake.deliveries(), (3, 1));
    let events = fake.events();
    assert_eq!(
        fake.delivery_status(events[0]["id"].as_str().unwrap())
            .as_deref(),
        Some("success")
    );
    let (_, body) = list(&fake, "sort=created_at").await;
    let rows = rows(&body);
    assert_eq!(rows[0]["delivery_attempts"], 2);
    assert_eq!(rows[1]["status"], "failed");
    assert_eq!(rows[1]["delivery_attempts"], 1);
    assert_eq!(rows[1]["response_status_code"], 400);
}

#[tokio::test]
async fn injected_failures_stalls_and_malformed_answers() {
    let fake = FakeCobalt::start(None).await;
    fake.fail_next(EVENTS_PATH, 429, 1);
    fake.fail_next(EVENTS_PATH, 503, 1);
    fake.malformed_next(1);

    let url = format!("{}{EVENTS_PATH}", fake.url);
    let response = with_credentials(client().get(&url), ACCESS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.json::<Value>().await.unwrap()["success"], false);
    let (status, body) = list(&fake, "").await;
    assert_eq!(status, 503);
    assert_eq!(body["success"], false);
    let response = with_credentials(client().get(&url), ACCESS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let (status, _) = list(&fake, "").await;
    assert_eq!(status, 200, "injections are used up");
    assert_eq!(fake.calls(EVENTS_PATH), 4);

    fake.fail_next(NOTES_PATH, 500, 1);
    let (status, _) = submit(&fake, &note("MRN-1")).await;
    assert_eq!(status, 500);
    assert!(fake.jobs().is_empty(), "a failed call does nothing");

    fake.stall(EVENTS_PATH, Duration::from_millis(300));
    let started = Instant::now();
    let (status, _) = list(&fake, "").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    fake.stall(EVENTS_PATH, Duration::ZERO);
    let started = Instant::now();
    list(&fake, "").await;
    assert!(started.elapsed() < Duration::from_millis(300));

    // A client that gives up on a stalled submission still created a note.
    fake.stall(NOTES_PATH, Duration::from_millis(500));
    let given_up = with_credentials(
        client().post(format!("{}{NOTES_PATH}", fake.url)),
        ACCESS_TOKEN,
    )
    .timeout(Duration::from_millis(100))
    .json(&note("MRN-2"))
    .send()
    .await;
    assert!(given_up.unwrap_err().is_timeout());
    assert_eq!(fake.jobs().len(), 1);
}
