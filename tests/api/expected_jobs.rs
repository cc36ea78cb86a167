//! Jobs the service expects: registration (`PUT /v1/jobs/{job_id}`),
//! pending and overdue states and listings, token permissions, and waiting
//! for an outcome (`?wait=`), on one replica and across two.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

fn ago(seconds: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn registration_is_201_then_200_and_409_for_another_note() {
    let app = spawn_app().await;
    let (status, job) = app
        .register("9001", json!({ "patient_note_id": "pn-9001" }))
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["overdue"], false);
    assert_eq!(job["job_id"], "9001");
    assert!(job["submitted_at"].is_string(), "{job}");
    assert_eq!(job["deciding_event_id"], Value::Null);

    let (status, again) = app
        .register("9001", json!({ "patient_note_id": "pn-9001" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        again["submitted_at"], job["submitted_at"],
        "a repeat changes nothing"
    );

    let (status, body) = app
        .register("9001", json!({ "patient_note_id": "pn-other" }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "conflict");
    let (_, still) = app.get_json("/v1/jobs/9001").await;
    assert_eq!(still["patient_note_id"], "pn-9001");
    assert_eq!(app.count("expected_jobs").await, 1);
}

#[tokio::test]
async fn a_registered_job_has_no_events_yet_and_an_unknown_one_is_404() {
    let app = spawn_app().await;
    app.register("9002", json!({ "patient_note_id": "pn-9002" }))
        .await;
    let (status, body) = app.get_json("/v1/jobs/9002/events").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "job_id": "9002", "events": [] }));

    let (status, body) = app.get_json("/v1/jobs/9003/events").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "not_found");
}

#[tokio::test]
async fn registration_never_changes_a_final_state_whichever_comes_first() {
    let app = spawn_app().await;
    // The outcome first, then the registration: 200, the outcome stays.
    let created = created_event("evt_rc1", "9101", "pn-9101", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&created.to_string()).await.status(), 200);
    let submitted = "2025-10-09T09:59:00Z";
    let (status, job) = app
        .register(
            "9101",
            json!({ "patient_note_id": "pn-9101", "submitted_at": submitted }),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "created");
    assert_eq!(job["submitted_at"], submitted);
    assert_eq!(job["overdue"], false);
    // An outcome with another note for the same job id: 409, nothing changes.
    let (status, _) = app
        .register("9101", json!({ "patient_note_id": "pn-x" }))
        .await;
    assert_eq!(status, 409);

    // The registration first, then the outcome, then the registration again.
    let (status, _) = app
        .register(
            "9102",
            json!({ "patient_note_id": "pn-9102", "submitted_at": ago(3600) }),
        )
        .await;
    assert_eq!(status, 201);
    let failed = failed_event("evt_rc2", "9102", "pn-9102", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&failed.to_string()).await.status(), 200);
    let (status, job) = app
        .register("9102", json!({ "patient_note_id": "pn-9102" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["overdue"], false, "a decided job is never overdue");
    assert_eq!(job["deciding_event_id"], "evt_rc2");

    // Neither is pending any more.
    let (_, page) = app.get_json("/v1/patient-notes?status=pending").await;
    assert_eq!(page["items"], json!([]), "{page}");
}

#[tokio::test]
async fn pending_jobs_turn_overdue_and_are_listed_page_by_page() {
    let app = spawn_app().await;
    // Four overdue (submitted over 600 s ago) and two recent ones.
    for (job, age) in [
        ("9201", 4000),
        ("9202", 3000),
        ("9203", 2000),
        ("9204", 1000),
        ("9205", 60),
        ("9206", 1),
    ] {
        let (status, body) = app
            .register(
                job,
                json!({ "patient_note_id": format!("pn-{job}"), "submitted_at": ago(age) }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, job) = app.get_json("/v1/jobs/9201").await;
    assert_eq!(
        (job["status"].as_str(), job["overdue"].as_bool()),
        (Some("pending"), Some(true))
    );
    let (_, job) = app.get_json("/v1/jobs/9206").await;
    assert_eq!(job["overdue"], false);

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = app.get_json("/v1/patient-notes?status=pending").await;
    assert_eq!(
        ids(&all),
        ["9206", "9205", "9204", "9203", "9202", "9201"],
        "newest first"
    );
    // The listing without a status stays the jobs with an outcome.
    let (_, decided) = app.get_json("/v1/patient-notes").await;
    assert_eq!(decided["items"], json!([]));

    // Overdue only, two a page, with the cursor; a job decided meanwhile
    // leaves the listing without disturbing the pages.
    let (status, first) = app.get_json("/v1/patient-notes?overdue=true&limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), ["9204", "9203"]);
    assert!(
        first["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["overdue"] == true)
    );
    let outcome = created_event("evt_od1", "9202", "pn-9202", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&outcome.to_string()).await.status(), 200);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get_json(&format!(
            "/v1/patient-notes?overdue=true&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(ids(&second), ["9201"]);
    assert_eq!(second["next_cursor"], Value::Null);
    // The same cursor is refused by the plain pending listing.
    let (status, _) = app
        .get_json(&format!(
            "/v1/patient-notes?status=pending&limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 400);

    // Metrics: pending and overdue counts and the oldest one's age.
    let metrics = app.metrics().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("cobalt_receiver_pending_jobs"), 5.0);
    assert_eq!(value("cobalt_receiver_overdue_jobs"), 3.0);
    let oldest = value("cobalt_receiver_oldest_pending_job_age_seconds");
    assert!((3999.0..4100.0).contains(&oldest), "{oldest}");
}

#[tokio::test]
async fn overdue_after_secs_decides_when_a_job_is_overdue() {
    let app = spawn_app_with(|config| config.overdue_after_secs = 1).await;
    app.register("9301", json!({ "patient_note_id": "pn-9301" }))
        .await;
    let (_, job) = app.get_json("/v1/jobs/9301").await;
    assert_eq!(job["overdue"], false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, job) = app.get_json("/v1/jobs/9301").await;
    assert_eq!(job["overdue"], true);
}

#[tokio::test]
async fn each_token_may_do_what_its_permissions_say() {
    let app = spawn_app().await;
    let body = json!({ "patient_note_id": "pn-9401" });
    let put = |token| {
        let body = body.clone();
        let app = &app;
        async move {
            app.call(Method::PUT, "/v1/jobs/9401", token, Some(&body), &[])
                .await
        }
    };
    let (status, refused) = put(Some(TOKEN)).await;
    assert_eq!(status, 403, "a bare token only reads: {refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("`submit`"),
        "{refused}"
    );
    assert!(!refused["detail"].as_str().unwrap().contains(TOKEN));
    assert_eq!(put(None).await.0, 401);
    assert_eq!(put(Some("not-a-token")).await.0, 401);
    assert_eq!(put(Some(SUBMIT_TOKEN)).await.0, 201);
    assert_eq!(put(Some(OPS_TOKEN)).await.0, 200);
    // Reading needs `read`, which all three have.
    for token in [TOKEN, SUBMIT_TOKEN, OPS_TOKEN] {
        assert_eq!(
            app.get_with("/v1/jobs/9401", Some(token)).await.status(),
            200
        );
    }
    // Recovery needs `operate`.
    for token in [TOKEN, SUBMIT_TOKEN] {
        let (status, _) = app
            .call(Method::POST, "/v1/recoveries", Some(token), None, &[])
            .await;
        assert_eq!(status, 403);
    }
    // With no Cobalt credentials configured, it says so.
    let (status, body) = app
        .call(Method::POST, "/v1/recoveries", Some(OPS_TOKEN), None, &[])
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("not_configured"))
    );
    // Submitting needs `submit` too, and Cobalt's credentials.
    let note = json!({ "note": NOTE_TEXT, "subject": SUBJECT, "patient_mrn": MRN, "location_id": "loc-1" });
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/patient-notes",
            Some(TOKEN),
            Some(&note),
            &[],
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/patient-notes",
            Some(SUBMIT_TOKEN),
            Some(&note),
            &[],
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("not_configured"))
    );
}

#[tokio::test]
async fn bad_registrations_are_400_and_change_nothing() {
    let app = spawn_app().await;
    let future = (OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&Rfc3339)
        .unwrap();
    let long = "9".repeat(256);
    let cases: Vec<(String, Value)> = vec![
        ("9501".into(), json!({})),
        ("9501".into(), json!({ "patient_note_id": 5 })),
        ("9501".into(), json!({ "patient_note_id": "" })),
        (
            "9501".into(),
            json!({ "patient_note_id": "pn", "submitted_at": "yesterday" }),
        ),
        (
            "9501".into(),
            json!({ "patient_note_id": "pn", "submitted_at": future }),
        ),
        (
            "9501".into(),
            json!({ "patient_note_id": "pn", "note": NOTE_TEXT }),
        ),
        (long, json!({ "patient_note_id": "pn" })),
    ];
    for (job, body) in cases {
        let (status, answer) = app.register(&job, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(!answer.to_string().contains(NOTE_TEXT));
    }
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/jobs/9501",
            Some(SUBMIT_TOKEN),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(app.count("expected_jobs").await, 0);
}

#[tokio::test]
async fn wait_answers_when_the_outcome_lands() {
    let app = spawn_app().await;
    app.register("9601", json!({ "patient_note_id": "pn-9601" }))
        .await;
    let started = Instant::now();
    let waiting = {
        let (client, url) = (
            app.client.clone(),
            format!("{}/v1/jobs/9601?wait=20", app.address),
        );
        tokio::spawn(async move {
            let response = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
            (
                response.status(),
                response.json::<Value>().await.unwrap(),
                Instant::now(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a pending job is waited for");
    let event = created_event("evt_w1", "9601", "pn-9601", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    let acknowledged = Instant::now();
    let (status, job, answered) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(job["status"], "created", "{job}");
    assert!(
        answered.duration_since(acknowledged) < Duration::from_millis(500),
        "woke late"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A job with its outcome already answers at once.
    let started = Instant::now();
    let (status, _) = app.get_json("/v1/jobs/9601?wait=20").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn wait_ends_at_its_deadline_with_the_current_state() {
    let app = spawn_app().await;
    app.register("9701", json!({ "patient_note_id": "pn-9701" }))
        .await;
    let started = Instant::now();
    let (status, job) = app.get_json("/v1/jobs/9701?wait=1").await;
    let waited = started.elapsed();
    assert_eq!(
        (status.as_u16(), job["status"].as_str()),
        (200, Some("pending"))
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let started = Instant::now();
    let (status, _) = app.get_json("/v1/jobs/9799?wait=1").await;
    assert_eq!(status, 404, "an unknown job is 404 once the time is up");
    assert!(started.elapsed() >= Duration::from_secs(1));

    for bad in ["121", "-1", "soon", "1.5"] {
        let (status, body) = app.get_json(&format!("/v1/jobs/9701?wait={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn waiters_are_let_go_at_shutdown() {
    let app = spawn_app().await;
    let mut waiters = Vec::new();
    for n in 0..100 {
        let (client, url) = (
            app.client.clone(),
            format!("{}/v1/jobs/98{n:02}?wait=60", app.address),
        );
        waiters.push(tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Every waiter connected and waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited for the waiters"
    );
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), 404);
    }
}

#[tokio::test]
async fn hundreds_of_waiters_wake_on_another_replica_without_polling() {
    if !runs_on(
        Engine::Postgres,
        "hundreds_of_waiters_wake_on_another_replica_without_polling",
    ) {
        return;
    }
    let dir = std::sync::Arc::new(workspace());
    let (a, b) = (
        spawn_app_in(dir.clone(), |_| {}).await,
        spawn_app_in(dir.clone(), |_| {}).await,
    );
    const WAITERS: usize = 300;
    for n in 0..WAITERS {
        let (status, _) = a
            .register(
                &format!("97{n:03}"),
                json!({ "patient_note_id": format!("pn-97{n:03}") }),
            )
            .await;
        assert_eq!(status, 201);
    }
    let mut waiters = Vec::new();
    for n in 0..WAITERS {
        let (client, url) = (
            a.client.clone(),
            format!("{}/v1/jobs/97{n:03}?wait=30", a.address),
        );
        waiters.push(tokio::spawn(async move {
            let response = client.get(url).bearer_auth(TOKEN).send().await.unwrap();
            (response.json::<Value>().await.unwrap(), Instant::now())
        }));
    }
    // Every waiter connected and made its first read.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Idle waiters read nothing: the database's transaction count stays put.
    let transactions = || async {
        let sql = dir.sql().await;
        let count: i64 = sqlx::query_scalar(
            "select (xact_commit + xact_rollback)::bigint from pg_stat_database where datname = current_database()",
        )
        .fetch_one(&sql)
        .await
        .unwrap();
        count
    };
    let before = transactions().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = transactions().await - before;
    assert!(
        idle < 30,
        "{idle} transactions in 2 s with {WAITERS} idle waiters"
    );

    // Outcomes land on the other replica; every waiter wakes promptly.
    let mut landed = Vec::new();
    for n in 0..WAITERS {
        let event = created_event(
            &format!("evt_x{n}"),
            &format!("97{n:03}"),
            &format!("pn-97{n:03}"),
            "2025-10-09T10:00:00Z",
        );
        assert_eq!(b.post_webhook(&event.to_string()).await.status(), 200);
        landed.push(Instant::now());
    }
    let mut slowest = Duration::ZERO;
    for (waiter, landed) in waiters.into_iter().zip(landed) {
        let (job, answered) = waiter.await.unwrap();
        assert_eq!(job["status"], "created", "{job}");
        slowest = slowest.max(answered.saturating_duration_since(landed));
    }
    assert!(
        slowest < Duration::from_millis(900),
        "a waiter woke {slowest:?} after its outcome landed elsewhere"
    );
}
