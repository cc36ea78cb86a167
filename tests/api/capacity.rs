//! How many clients the service holds: its open-file limit raised to the
//! hard one, and clients waiting for an outcome capped so that deliveries
//! always find room.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;
use crate::process::{TEST_ENV, start_limited};

#[tokio::test]
async fn past_the_waiters_cap_a_wait_is_answered_at_once_and_deliveries_go_on() {
    let app = spawn_app_with(|config| config.max_waiters = 2).await;
    let (status, _) = app
        .register("6001", json!({ "patient_note_id": "pn-6001" }))
        .await;
    assert_eq!(status, 201);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let request = app
                .client
                .get(format!("{}/v1/jobs/6001?wait=30", app.address))
                .bearer_auth(TOKEN)
                .send();
            tokio::spawn(request)
        })
        .collect();
    // Both take their places (on loopback, well within half a second);
    // a third is answered at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, refused) = app
        .call(
            reqwest::Method::GET,
            "/v1/jobs/6001?wait=30",
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    assert_eq!(refused["code"], "too_many_waiters", "{refused}");
    // A plain read and a delivery are not held back.
    assert_eq!(app.get("/v1/jobs/6001").await.status(), 200);
    let event = created_event("evt_6001", "6001", "pn-6001", "2025-10-09T10:00:00Z");
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    for waiter in waiting {
        let response = waiter.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
    }
    // The places are free again.
    let (status, state) = app
        .call(
            reqwest::Method::GET,
            "/v1/jobs/6001?wait=1",
            Some(TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{state}");
}

#[test]
fn the_service_raises_its_own_open_file_limit_and_derives_the_cap_from_it() {
    let dir = workspace();
    let mut server = start_limited(&dir, &TEST_ENV, &["serve"], Some((1_024, 8_192)));
    let log = server.log();
    assert!(log.contains("open_files=8192"), "{log}");
    assert!(log.contains("max_waiters=1984"), "{log}");
    assert!(log.contains("the open-file limit was raised"), "{log}");
    server.terminate();
    server.wait_exit(Duration::from_secs(10));
}
