//! The status API: tokens, lookups, listing and the event log.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::*;

const ROUTES: [&str; 4] = [
    "/v1/jobs/61",
    "/v1/jobs/61/events",
    "/v1/patient-notes/pn-61",
    "/v1/patient-notes?status=created",
];

#[tokio::test]
async fn every_status_route_needs_a_valid_bearer_token() {
    let app = spawn_app().await;
    app.post_webhook(&created_event("evt_61", "61", "pn-61", "2025-10-09T10:00:00Z").to_string())
        .await;
    for route in ROUTES {
        for token in [None, Some("wrong-token"), Some("")] {
            let response = app.get_with(route, token).await;
            assert_eq!(response.status(), 401, "{route} with {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        let response = app
            .client
            .get(format!("{}{route}", app.address))
            .header("authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{route} with Basic");
        assert_eq!(app.get(route).await.status(), 200, "{route} with the token");
    }
    for route in ["/healthz", "/readyz"] {
        assert_eq!(app.get_with(route, None).await.status(), 200, "{route}");
    }
}

#[tokio::test]
async fn unknown_jobs_and_notes_are_404() {
    let app = spawn_app().await;
    for route in [
        "/v1/jobs/404",
        "/v1/jobs/404/events",
        "/v1/patient-notes/pn-none",
        "/v1/nothing-here",
    ] {
        let (status, body) = json_of(app.get(route).await).await;
        assert_eq!(status, 404, "{route}");
        assert_eq!(body["code"], "not_found");
    }
}

#[tokio::test]
async fn a_note_shows_all_its_jobs() {
    let app = spawn_app().await;
    app.post_webhook(&failed_event("evt_n1", "71", "pn-7", "2025-10-09T10:00:00Z").to_string())
        .await;
    app.post_webhook(&created_event("evt_n2", "72", "pn-7", "2025-10-09T10:10:00Z").to_string())
        .await;
    let (status, note) = json_of(app.get("/v1/patient-notes/pn-7").await).await;
    assert_eq!(status, 200);
    assert_eq!(note["patient_note_id"], "pn-7");
    let jobs = note["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0]["job_id"].clone(), jobs[0]["status"].clone()),
        (json!("72"), json!("created"))
    );
    assert_eq!(
        (jobs[1]["job_id"].clone(), jobs[1]["status"].clone()),
        (json!("71"), json!("failed"))
    );
    assert_eq!(jobs[1]["reasons"][0]["code"], "emr_rejected");
}

#[tokio::test]
async fn a_job_id_claimed_by_two_notes_is_a_conflict_not_a_guess() {
    let app = spawn_app().await;
    app.post_webhook(&created_event("evt_c1", "73", "pn-a", "2025-10-09T10:00:00Z").to_string())
        .await;
    app.post_webhook(&created_event("evt_c2", "73", "pn-b", "2025-10-09T10:00:00Z").to_string())
        .await;
    let (status, body) = json_of(app.get("/v1/jobs/73").await).await;
    assert_eq!(status, 409);
    assert!(body["detail"].as_str().unwrap().contains("pn-a, pn-b"));
}

/// Follows `next_cursor` from `first` to the end; returns every item.
async fn all_pages(app: &TestApp, first: &str) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut path) = (Vec::new(), 0, first.to_owned());
    loop {
        let (status, page) = json_of(app.get(&path).await).await;
        assert_eq!(status, 200, "{path}: {page}");
        pages += 1;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => return (items, pages),
        }
        assert!(pages < 100, "pagination does not end");
    }
}

#[tokio::test]
async fn listings_page_newest_first_and_filter_by_status_and_time() {
    let app = spawn_app().await;
    // 11 jobs, one minute apart; every third failed. Two share a minute.
    for i in 0..11u32 {
        let minute = if i == 10 { 9 } else { i };
        let created = format!("2025-10-09T10:{minute:02}:00Z");
        let (job, note) = (format!("8{i:02}"), format!("pn-8{i:02}"));
        let event = if i % 3 == 0 {
            failed_event(&format!("evt_l{i:02}"), &job, &note, &created)
        } else {
            created_event(&format!("evt_l{i:02}"), &job, &note, &created)
        };
        assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    }

    let (items, pages) = all_pages(&app, "/v1/patient-notes?limit=3").await;
    assert_eq!(items.len(), 11);
    assert_eq!(pages, 4);
    let ids: HashSet<_> = items
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 11, "no job is missed or repeated across pages");
    let times: Vec<_> = items
        .iter()
        .map(|j| j["deciding_event_created"].as_str().unwrap().to_owned())
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first);

    let (failed, _) = all_pages(&app, "/v1/patient-notes?status=failed&limit=2").await;
    let failed_jobs: Vec<_> = failed
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(failed_jobs, ["809", "806", "803", "800"]);
    assert!(failed.iter().all(|j| j["failure_reason"].is_string()));

    let (created, _) = all_pages(&app, "/v1/patient-notes?status=created").await;
    assert_eq!(created.len(), 7);

    let (recent, _) = all_pages(&app, "/v1/patient-notes?since=2025-10-09T10:08:00Z").await;
    let recent_jobs: Vec<_> = recent
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent_jobs, ["810", "809", "808"]);

    // An exact last page carries no cursor to an empty one.
    let (status, page) = json_of(app.get("/v1/patient-notes?status=failed&limit=4").await).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_listing_parameters_are_400_with_a_reason() {
    let app = spawn_app().await;
    let cases = [
        ("status=queued", "status"),
        ("overdue=yes", "overdue"),
        ("status=failed&overdue=true", "overdue"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=7b7d", "cursor"),
        ("since=yesterday", "since"),
    ];
    for (query, names) in cases {
        let (status, body) = json_of(app.get(&format!("/v1/patient-notes?{query}")).await).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["detail"].as_str().unwrap().contains(names),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn a_cursor_is_valid_only_as_issued_for_its_own_listing_even_after_a_restart() {
    let app = spawn_app().await;
    for i in 0..4u32 {
        let created = format!("2025-10-09T11:0{i}:00Z");
        let (job, note) = (format!("70{i}"), format!("pn-70{i}"));
        for event in [
            failed_event(&format!("evt_cf{i}"), &job, &note, &created),
            created_event(&format!("evt_cc{i}"), &format!("c{job}"), &note, &created),
        ] {
            assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
        }
    }
    let first = "/v1/patient-notes?status=failed&limit=2";
    let (_, page) = json_of(app.get(first).await).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();

    // Taken to another listing, the cursor is refused, not misread.
    for other in [
        "status=created&limit=2",
        "limit=2",
        "status=failed&since=2025-10-09T11:00:00Z&limit=2",
    ] {
        let (status, body) = json_of(
            app.get(&format!("/v1/patient-notes?{other}&cursor={cursor}"))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{other}");
        assert!(
            body["detail"].as_str().unwrap().contains("cursor"),
            "{body}"
        );
    }
    // A cursor made by hand: a valid position, in the format of the page's
    // own cursor, without the tag this service would have given it.
    let position = cursor.split('.').next().unwrap();
    let forged = hex_encode(
        br#"{"created_ns":1760007600000000000,"patient_note_id":"pn-701","job_id":"701"}"#,
    );
    for hand_made in [
        position.to_owned(),
        forged.clone(),
        format!("{forged}.{}", "0".repeat(32)),
    ] {
        let path = format!("{first}&cursor={hand_made}");
        assert_eq!(app.get(&path).await.status(), 400, "{hand_made}");
    }
    // The page size may change between pages.
    let (status, _) = json_of(
        app.get(&format!(
            "/v1/patient-notes?status=failed&limit=1&cursor={cursor}"
        ))
        .await,
    )
    .await;
    assert_eq!(status, 200);

    // The cursor survives a restart on the same database.
    let dir = app.stop().await;
    let app = spawn_app_in(dir, |_| {}).await;
    let (status, page) = json_of(app.get(&format!("{first}&cursor={cursor}")).await).await;
    assert_eq!(status, 200, "{page}");
    let jobs: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["701", "700"]);
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_jobs_events_come_oldest_first_without_patient_text() {
    let app = spawn_app().await;
    app.post_webhook(&failed_event("evt_e1", "90", "pn-90", "2025-10-09T10:00:00Z").to_string())
        .await;
    app.post_webhook(&created_event("evt_e2", "90", "pn-90", "2025-10-09T10:01:00Z").to_string())
        .await;
    let mut incomplete = created_event("evt_e3", "90", "pn-90", "2025-10-09T10:02:00Z");
    incomplete["data"]
        .as_object_mut()
        .unwrap()
        .remove("emr_note_id");
    app.post_webhook(&incomplete.to_string()).await;

    let response = app.get("/v1/jobs/90/events").await;
    let text = response.text().await.unwrap();
    for phi in [NOTE_TEXT, SUBJECT, MRN] {
        assert!(
            !text.contains(phi),
            "the event log answer carries patient data"
        );
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    let events = body["events"].as_array().unwrap();
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("evt_e1", "applied"),
            ("evt_e2", "applied"),
            ("evt_e3", "rejected")
        ]
    );
    assert_eq!(events[1]["type"], "patient_note.created");
    assert_eq!(events[1]["created"], "2025-10-09T10:01:00Z");
    assert!(events[1]["received_at"].is_string());
}
