//! What a stranger can do to each port: refused sign-ins flooding the
//! console, oversized request ids, guessing tokens, reading internals off
//! unauthenticated answers. None of it may grow the database more than a
//! little, stop deliveries, or leak.

use reqwest::StatusCode;

use crate::helpers::console::{Browser, audit_rows, console_app, console_on, minutes_ago};
use crate::helpers::*;

/// A refused sign-in from `browser`, with `request_id`.
async fn refused_sign_in(browser: &Browser, token: &str, request_id: &str) -> reqwest::Response {
    browser
        .client
        .post(format!("{}/ui/sign-in", browser.base))
        .header("origin", &browser.base)
        .header("x-request-id", request_id)
        .form(&[("token", token), ("next", "/ui")])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_refused_sign_ins_is_counted_not_stored_and_deliveries_go_on() {
    let app = console_app().await;
    let browser = Browser::new(&app);
    let huge_id = "r".repeat(30_000);
    let before = app.dir.size_bytes().await;

    let (mut refused, mut throttled, mut delivered) = (0, 0, 0);
    for n in 0..2_000 {
        let response = refused_sign_in(&browser, &format!("guess-{n}"), &huge_id).await;
        // The offered id is not used: a fresh one comes back.
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(id.len() <= 64 && id != huge_id, "{id}");
        match response.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=300).contains(&wait), "Retry-After {wait}");
                throttled += 1;
            }
            other => panic!("a refused sign-in answered {other}"),
        }
        // Cobalt's deliveries are taken all along.
        if n % 50 == 0 {
            let event = created_event(
                &format!("evt_flood_{n}"),
                &format!("{}", 70_000 + n),
                &format!("pn-flood-{n}"),
                &minutes_ago(1),
            );
            assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
            delivered += 1;
        }
    }
    // Strangers on the other port: wrong tokens and forged signatures,
    // with the same ids, store nothing either.
    for n in 0..300 {
        let (status, _) = app
            .call(
                reqwest::Method::GET,
                "/v1/jobs/1",
                Some(&format!("guess-{n}")),
                None,
                &[("x-request-id", &huge_id)],
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let forged = created_event(&format!("evt_forged_{n}"), "1", "pn-1", &minutes_ago(1));
        let response = app
            .post_raw(
                forged.to_string().into_bytes(),
                &[
                    ("cobalt-verification", "t=1,v1=00"),
                    ("x-request-id", &huge_id),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refused, 10, "the throttle answers 429 after the tenth");
    assert_eq!(throttled, 1_990);
    assert_eq!(delivered, 40);

    // Throttled, a right token is refused too: the answer tells nothing.
    let right = refused_sign_in(&browser, TOKEN, "fine-id").await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(right.headers()["x-request-id"], "fine-id");

    // One row so far for the address, naming it; none carries the id.
    let rows = audit_rows(&app, "console.sign_in_refused").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["target"], "from 127.0.0.1");
    assert_eq!(rows[0]["actor"], "(unknown token)");
    assert!(rows[0]["request_id"].as_str().unwrap().len() <= 64);

    let after = app.dir.size_bytes().await;
    assert!(
        after - before < 1024 * 1024,
        "the database grew by {} bytes",
        after - before
    );
    for n in (0..2_000).step_by(50) {
        let (status, job) = app.get_json(&format!("/v1/jobs/{}", 70_000 + n)).await;
        assert_eq!(status, 200, "{job}");
    }
}

#[tokio::test]
async fn the_throttle_is_per_client_address_behind_a_trusted_proxy() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.console_sign_in_attempts = 3;
        config.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let browser = Browser::new(&app);
    let from = |address: &'static str, token: &'static str| {
        browser
            .client
            .post(format!("{}/ui/sign-in", browser.base))
            .header("origin", &browser.base)
            .header("x-forwarded-for", address)
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.7", "wrong").await.unwrap().status(), 401);
    }
    assert_eq!(from("203.0.113.7", "wrong").await.unwrap().status(), 429);
    assert_eq!(from("203.0.113.7", TOKEN).await.unwrap().status(), 429);
    // Another client behind the same proxy signs in.
    assert_eq!(from("203.0.113.8", TOKEN).await.unwrap().status(), 303);
    let rows = audit_rows(&app, "console.sign_in_refused").await;
    assert_eq!(rows[0]["target"], "from 203.0.113.7");
    let rows = audit_rows(&app, "console.sign_in").await;
    assert_eq!(rows[0]["target"], "from 203.0.113.8");
}

#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.console_sign_in_attempts = 2;
    })
    .await;
    let browser = Browser::new(&app);
    for n in 0..3 {
        // A client that writes a new address each time is still itself.
        let status = browser
            .client
            .post(format!("{}/ui/sign-in", browser.base))
            .header("origin", &browser.base)
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .form(&[("token", "wrong")])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, if n < 2 { 401 } else { 429 }, "attempt {n}");
    }
}

#[tokio::test]
async fn request_ids_are_kept_only_when_short_and_plain() {
    let app = spawn_app().await;
    for (offered, kept) in [
        ("abc-123_x.y:z", true),
        (&"x".repeat(64) as &str, true),
        (&"x".repeat(65), false),
        ("has space", false),
        ("bidi\u{202e}", false),
    ] {
        let response = app
            .client
            .get(format!("{}/healthz", app.address))
            .header("x-request-id", offered.as_bytes())
            .send()
            .await
            .unwrap();
        let answered = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(answered == offered, kept, "{offered:?} -> {answered}");
        assert!(!answered.is_empty() && answered.len() <= 64);
    }
    // An API read's audit row carries the fresh id, not the offered one.
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            "/v1/jobs/1",
            Some(TOKEN),
            None,
            &[("x-request-id", &"y".repeat(5_000))],
        )
        .await;
    assert_eq!(status, 404);
    let rows = audit_rows(&app, "api.job.read").await;
    assert!(rows[0]["request_id"].as_str().unwrap().len() <= 64);
}

#[tokio::test]
async fn unauthenticated_answers_name_no_internals() {
    let app = spawn_app_with(|config| config.write_timeout_ms = 300).await;
    let lock = app.dir.hold_write_lock().await;
    let (status, body) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, 503);
    // General words only; the database's own text goes to the log.
    let detail = body["detail"].as_str().unwrap();
    let general = [
        "it did not commit in time",
        "it refused the write",
        "it is full",
    ]
    .map(|why| format!("the database cannot take writes: {why}"));
    assert!(general.contains(&detail.to_owned()), "{body}");
    lock.release().await;
    // A refused token is told nothing of the tokens there are.
    let (status, body) = app
        .call(reqwest::Method::GET, "/v1/jobs/1", Some("nope"), None, &[])
        .await;
    assert_eq!(status, 401);
    assert!(!body.to_string().contains("ops"), "{body}");
    assert_eq!(app.get("/readyz").await.status(), 200);
}
