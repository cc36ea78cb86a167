//! The operator console over HTTP: sign-in and sessions, the security
//! headers, CSRF and origin checks, every page's content and filters,
//! pagination under inserts, the CSV export, the audit trail, recovery,
//! and no patient data anywhere but a recorded MRN reveal.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use time::OffsetDateTime;

use crate::fake_cobalt::{FakeCobalt, point_at};
use crate::helpers::console::*;
use crate::helpers::*;

#[tokio::test]
async fn the_console_is_off_by_default_and_never_on_the_webhook_port() {
    let app = spawn_app().await;
    assert!(app.console.is_none());
    let response = app.get_with("/ui", None).await;
    assert_eq!(response.status(), 404);

    let app = console_app().await;
    let response = app.get_with("/ui/sign-in", None).await;
    assert_eq!(
        response.status(),
        404,
        "the webhook port serves no console page"
    );
    let page = Browser::new(&app).get("/ui/sign-in").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"token\""));
}

#[tokio::test]
async fn a_page_without_a_session_sends_the_browser_to_sign_in_and_back() {
    let app = console_app().await;
    let anonymous = Browser::new(&app);
    let page = anonymous.get("/ui/jobs?status=failed").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        "/ui/sign-in?next=%2Fui%2Fjobs%3Fstatus%3Dfailed"
    );

    // A wrong token: the form again, 401, no cookie.
    let refused = anonymous
        .post("/ui/sign-in", &[("token", "not-a-token"), ("next", "/ui")])
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.headers.get("set-cookie").is_none());
    assert!(
        !refused.body.contains("not-a-token"),
        "the token is not echoed"
    );
    let rows = audit_rows(&app, "console.sign_in_refused").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["actor"], "(unknown token)");
    assert_eq!(
        rows[0]["target"], "from 127.0.0.1",
        "the address, never the token"
    );

    // The right one: a session, then back where the browser was going;
    // never to another site.
    let signed_in = anonymous
        .post(
            "/ui/sign-in",
            &[("token", TOKEN), ("next", "/ui/jobs?status=failed")],
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert_eq!(signed_in.location(), "/ui/jobs?status=failed");
    let elsewhere = anonymous
        .post(
            "/ui/sign-in",
            &[("token", TOKEN), ("next", "//evil.example/")],
        )
        .await;
    assert_eq!(elsewhere.location(), "/ui");
}

#[tokio::test]
async fn the_session_cookie_is_strict_and_ends_at_sign_out() {
    let app = console_app().await;
    let browser = Browser::new(&app);
    let page = browser
        .post("/ui/sign-in", &[("token", TOKEN), ("next", "/ui")])
        .await;
    let cookie = page.headers["set-cookie"].to_str().unwrap().to_owned();
    let value = cookie.split(';').next().unwrap();
    assert_eq!(value.len(), "cobalt_console=".len() + 64, "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP here: {cookie}");
    assert!(
        !cookie.contains(TOKEN),
        "the token never goes to the browser"
    );

    let browser = Browser::signed_in(&app, TOKEN).await;
    // Sign-out needs the session's CSRF token.
    let forged = browser
        .post("/ui/sign-out", &[("csrf", &"0".repeat(64))])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/ui").await.status, StatusCode::OK);
    let out = browser
        .post("/ui/sign-out", &[("csrf", &browser.csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = browser.get("/ui").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the session is gone server-side"
    );
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.console_session_idle_secs = 1;
    })
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;
    // Use keeps it alive...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(browser.get("/ui").await.status, StatusCode::OK);
    }
    // ...idleness ends it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let page = browser.get("/ui").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/ui/sign-in"));
}

#[tokio::test]
async fn a_form_from_another_site_is_refused() {
    let app = console_app().await;
    let browser = Browser::signed_in(&app, OPS_TOKEN).await;
    let csrf = browser.csrf.clone();
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let page = browser
            .post_from("/ui/sign-out", &[("csrf", &csrf)], origin)
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "origin {origin:?}");
        let page = browser
            .post_from("/ui/sign-in", &[("token", TOKEN)], origin)
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "origin {origin:?}");
    }
    // Fetch metadata stands in for a missing Origin.
    let mut request = browser
        .client
        .post(format!("{}/ui/sign-out", browser.base))
        .form(&[("csrf", &csrf)])
        .header(
            "cookie",
            format!("cobalt_console={}", browser.cookie.as_ref().unwrap()),
        );
    request = request.header("sec-fetch-site", "cross-site");
    assert_eq!(
        request.send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // What a browser sends for the console's own form under
    // `Referrer-Policy: no-referrer`: `Origin: null`, `Sec-Fetch-Site:
    // same-origin`. Accepted (here: a sign-in).
    let own = browser
        .client
        .post(format!("{}/ui/sign-in", browser.base))
        .form(&[("token", TOKEN)])
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        browser.get("/ui").await.status,
        StatusCode::OK,
        "still signed in"
    );
}

#[tokio::test]
async fn every_page_sends_the_security_headers() {
    let app = console_app().await;
    deliver(
        &app,
        &failure("evt_h1", "7001", "EMR down", &minutes_ago(5)),
    )
    .await;
    let browser = Browser::signed_in(&app, OPS_TOKEN).await;
    let anonymous = Browser::new(&app);
    let mut pages = Vec::new();
    for path in [
        "/ui",
        "/ui/jobs",
        "/ui/jobs?status=failed",
        "/ui/jobs/7001",
        "/ui/jobs.csv",
        "/ui/overdue",
        "/ui/audit",
        "/ui/search?q=7001",
        "/ui/no-such-page",
    ] {
        pages.push((path, browser.get(path).await));
    }
    pages.push(("/ui/sign-in", anonymous.get("/ui/sign-in").await));
    pages.push(("/ui (anonymous)", anonymous.get("/ui").await));
    for (path, page) in &pages {
        let header = |name: &str| {
            page.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(
            header("content-security-policy"),
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
            "{path}"
        );
        assert_eq!(header("cache-control"), "no-store", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert!(!page.body.contains("<script"), "{path}: no script");
    }
    let css = browser.get("/ui/style.css").await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.body.contains("prefers-color-scheme: dark"));
}

#[tokio::test]
async fn today_counts_outcomes_and_groups_failures_by_reason() {
    let app = console_app().await;
    // A fixed day, so the test means the same at any hour.
    let day = "2026-11-20";
    for n in 0..3 {
        let event = created_event(
            &format!("evt_c{n}"),
            &format!("71{n}"),
            "pn-c",
            &format!("{day}T1{n}:00:00Z"),
        );
        deliver(&app, &event).await;
    }
    for (n, reason) in ["EMR down", "EMR down", "Unknown provider"]
        .iter()
        .enumerate()
    {
        deliver(
            &app,
            &failure(
                &format!("evt_f{n}"),
                &format!("72{n}"),
                reason,
                &format!("{day}T1{n}:30:00Z"),
            ),
        )
        .await;
    }
    // The day before's failure is not this day's.
    deliver(
        &app,
        &failure("evt_old", "7300", "EMR down", "2026-11-19T23:59:59Z"),
    )
    .await;
    // A delivery signed with the wrong secret.
    let wrong = app
        .post_raw(b"{}".to_vec(), &[("cobalt-verification", &"0".repeat(64))])
        .await;
    assert_eq!(wrong.status(), 401);

    let browser = Browser::signed_in(&app, TOKEN).await;
    let page = browser.get(&format!("/ui?day={day}")).await;
    assert_eq!(page.status, 200);
    let text = &page.body;
    let count = |label: &str| -> String {
        let at = text
            .find(&format!("<dt>{label}</dt>"))
            .unwrap_or_else(|| panic!("{label} in {text}"));
        let rest = &text[at..];
        let open = rest.find("\">").unwrap() + 2;
        rest[open..open + rest[open..].find('<').unwrap()].to_owned()
    };
    assert_eq!(count("Created"), "3");
    assert_eq!(count("Failed"), "3");
    // Most frequent reason first, linked to the filtered list of the day.
    let emr_down = text.find(">EMR down</a>").expect("EMR down listed");
    let unknown = text
        .find(">Unknown provider</a>")
        .expect("Unknown provider listed");
    assert!(emr_down < unknown);
    assert!(
        text.contains(&format!(
            "/ui/jobs?status=failed&amp;reason=EMR%20down&amp;from={day}&amp;to={day}"
        )),
        "{text}"
    );
    assert!(
        text.contains("<td>2</td>"),
        "EMR down twice that day: {text}"
    );
    assert!(text.contains("Last delivery received"));
    assert!(
        text.contains("2026-11-20 10:00:00 UTC") || text.contains("2026-11-20 10:30:00 UTC"),
        "{text}"
    );

    let today = browser.get("/ui").await;
    assert!(
        today.body.contains("Refused signatures today</dt><dd>1"),
        "{}",
        today.body
    );
    assert!(today.body.contains("webhook_secrets"), "the hint");
}

#[tokio::test]
async fn jobs_are_filtered_and_paged_newest_first_stably_under_inserts() {
    let app = console_app().await;
    // 60 failures (two reasons, two locations) and 5 created notes.
    for n in 0..60 {
        let reason = if n % 2 == 0 {
            "EMR down"
        } else {
            "Unknown provider"
        };
        let mut event = failure(
            &format!("evt_p{n:02}"),
            &format!("80{n:02}"),
            reason,
            &minutes_ago(200 - n),
        );
        event["data"]["location_id"] = json!(if n % 3 == 0 { "loc-a" } else { "loc-b" });
        event["access_token_reference_id"] = json!(if n < 30 { "acct-1" } else { "acct-2" });
        deliver(&app, &event).await;
    }
    for n in 0..5 {
        deliver(
            &app,
            &created_event(
                &format!("evt_pc{n}"),
                &format!("81{n}"),
                "pn-pc",
                &minutes_ago(10),
            ),
        )
        .await;
    }
    let browser = Browser::signed_in(&app, TOKEN).await;
    let jobs_in = |body: &str| -> Vec<String> {
        body.split("<td class=\"id\"><a href=\"/ui/jobs/")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };

    let first = browser.get("/ui/jobs?status=failed").await;
    assert_eq!(first.status, 200);
    let first_ids = jobs_in(&first.body);
    assert_eq!(first_ids.len(), 50);
    assert_eq!(first_ids[0], "8059", "newest first");
    let next = first
        .body
        .split("rel=\"next\"")
        .next()
        .and_then(|head| head.rsplit("href=\"").next())
        .map(|href| href[..href.find('"').unwrap()].replace("&amp;", "&"))
        .expect("a next-page link");
    // Newer failures arrive between the pages: the second page is still
    // exactly the rest of the first listing.
    for n in 0..3 {
        deliver(
            &app,
            &failure(
                &format!("evt_new{n}"),
                &format!("82{n}"),
                "EMR down",
                &minutes_ago(1),
            ),
        )
        .await;
    }
    let second = browser.get(&next).await;
    let second_ids = jobs_in(&second.body);
    let expected: Vec<String> = (0..10).rev().map(|n| format!("80{n:02}")).collect();
    assert_eq!(second_ids, expected);
    assert!(!second.body.contains("rel=\"next\""));
    // A cursor taken to other filters is refused, with a way back.
    let moved = browser
        .get(&next.replace("status=failed", "status=created"))
        .await;
    assert_eq!(moved.status, StatusCode::BAD_REQUEST);
    assert!(moved.body.contains("start from the first page"));

    // Each filter narrows the list.
    let count = |body: &str| jobs_in(body).len();
    let reason = browser
        .get("/ui/jobs?status=failed&reason=Unknown%20provider")
        .await;
    assert_eq!(count(&reason.body), 30);
    assert!(!reason.body.contains(">EMR down<"));
    let location = browser.get("/ui/jobs?location=loc-a&status=failed").await;
    assert_eq!(count(&location.body), 20);
    let account = browser
        .get("/ui/jobs?account=acct-1&reason=EMR%20down")
        .await;
    assert_eq!(count(&account.body), 15);
    let created = browser.get("/ui/jobs?status=created").await;
    assert_eq!(count(&created.body), 5);
    let day = OffsetDateTime::now_utc().date();
    let today = browser.get(&format!("/ui/jobs?from={day}&to={day}")).await;
    assert!(count(&today.body) > 0);
    let before = browser
        .get(&format!(
            "/ui/jobs?to={}",
            day.previous_day().unwrap().previous_day().unwrap()
        ))
        .await;
    assert_eq!(count(&before.body), 0, "{}", before.body);
    // Bad filters: a clear message and a 400, never a 500.
    for bad in [
        "/ui/jobs?status=lost",
        "/ui/jobs?from=yesterday",
        "/ui/jobs?status=created&overdue=true",
    ] {
        let page = browser.get(bad).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.body.contains("role=\"alert\""), "{bad}");
    }
}

#[tokio::test]
async fn the_csv_export_holds_exactly_the_filtered_set_escaped() {
    let app = console_app().await;
    let tricky = "EMR said \"no\", twice\nand =HYPERLINK(\"x\")";
    deliver(&app, &failure("evt_x1", "9001", tricky, &minutes_ago(3))).await;
    deliver(
        &app,
        &failure("evt_x2", "9002", "=cmd|' /C calc'!A0", &minutes_ago(2)),
    )
    .await;
    deliver(
        &app,
        &failure("evt_x3", "9003", "Unknown provider", &minutes_ago(1)),
    )
    .await;
    deliver(
        &app,
        &created_event("evt_x4", "9004", "pn-x4", &minutes_ago(1)),
    )
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;

    let csv = browser.get("/ui/jobs.csv?status=failed").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"jobs-")
    );
    let lines: Vec<&str> = csv.body.split("\r\n").collect();
    // Every field quoted, the header too.
    assert_eq!(
        lines[0],
        "\"job_id\",\"patient_note_id\",\"status\",\"overdue\",\"failure_reason\",\
         \"emr_note_id\",\"location_id\",\"access_token_reference_id\",\"submitted_at\",\
         \"decided_at\",\"first_received_at\",\"last_received_at\""
    );
    assert!(lines[1].starts_with(
        "\"9003\",\"pn-9003\",\"failed\",\"false\",\"Unknown provider\",\"\",\"loc-2\",\"user_test\",\"\","
    ));
    assert!(
        lines[2].starts_with("\"9002\",\"pn-9002\",\"failed\",\"false\",\"'=cmd|' /C calc'!A0\","),
        "{}",
        lines[2]
    );
    assert!(
        csv.body.contains(
            "\"9001\",\"pn-9001\",\"failed\",\"false\",\"EMR said \"\"no\"\", twice\nand =HYPERLINK(\"\"x\"\")\","
        ),
        "{}",
        csv.body
    );
    assert!(
        !lines.iter().any(|line| line.starts_with("\"9004\"")),
        "only the filtered set"
    );
    let all = browser.get("/ui/jobs.csv").await;
    assert!(all.body.contains("\"9004\",\"pn-x4\",\"created\""));
    let reason = browser.get("/ui/jobs.csv?reason=Unknown%20provider").await;
    assert_eq!(reason.body.matches("\r\n").count(), 2, "header and one row");
    let bad = browser.get("/ui/jobs.csv?from=never").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_job_page_tells_its_whole_story() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.overdue_after_secs = 60;
    })
    .await;
    // Registered, then a failure (Cobalt's first attempt), then the note
    // was created after all (a later event outranks the failure).
    let (status, _) = app
        .register(
            "9100",
            json!({ "patient_note_id": "pn-story", "submitted_at": minutes_ago(30) }),
        )
        .await;
    assert_eq!(status, 201);
    let mut failed = failure("evt_s1", "9100", "EMR busy", &minutes_ago(20));
    failed["data"]["patient_note_id"] = json!("pn-story");
    let body = failed.to_string();
    let response = app
        .post_raw(
            body.clone().into_bytes(),
            &[
                ("cobalt-verification", &sign(body.as_bytes())),
                ("webhook-attempt", "2"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let created = created_event("evt_s2", "9100", "pn-story", &minutes_ago(10));
    deliver(&app, &created).await;
    // Cobalt's retry of a delivery it thought lost: a duplicate, noted.
    let body = created.to_string();
    let retried = app
        .post_raw(
            body.clone().into_bytes(),
            &[
                ("cobalt-verification", &sign(body.as_bytes())),
                ("webhook-attempt", "3"),
            ],
        )
        .await;
    assert_eq!(retried.status(), 200);
    // And one still waiting, overdue.
    app.register(
        "9101",
        json!({ "patient_note_id": "pn-wait", "submitted_at": minutes_ago(5) }),
    )
    .await;

    let browser = Browser::signed_in(&app, TOKEN).await;
    let page = browser.get("/ui/jobs/9100").await;
    assert_eq!(page.status, 200);
    let body = &page.body;
    let order: Vec<usize> = [
        "Submitted to Cobalt",
        "<code>evt_s1</code>",
        "event <code>evt_s2</code>",
        "Delivered again, attempt 3: a duplicate of event <code>evt_s2</code>",
    ]
    .iter()
    .map(|needle| {
        body.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {body}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "in time order: {order:?}"
    );
    assert!(body.contains("attempt 2"));
    assert!(
        body.contains("applied, later outranked"),
        "the failure: {body}"
    );
    assert!(body.contains("decided the job"));
    assert!(body.contains("emr-evt_s2"));
    assert!(body.contains("class=\"badge created\""));

    let waiting = browser.get("/ui/jobs/9101").await;
    assert!(
        waiting.body.contains("Overdue since then"),
        "{}",
        waiting.body
    );
    assert!(waiting.body.contains("class=\"badge overdue\""));
    let unknown = browser.get("/ui/jobs/9999").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn search_goes_straight_to_the_job_by_any_of_its_ids() {
    let app = console_app().await;
    deliver(
        &app,
        &created_event("evt_q1", "9200", "pn-q", &minutes_ago(5)),
    )
    .await;
    let browser = Browser::signed_in(&app, TOKEN).await;
    for id in ["9200", "pn-q", "emr-evt_q1", "evt_q1", " 9200 "] {
        let page = browser
            .get(&format!("/ui/search?q={}", id.replace(' ', "%20")))
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{id}");
        assert_eq!(page.location(), "/ui/jobs/9200", "{id}");
    }
    let none = browser.get("/ui/search?q=nothing-here").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(none.body.contains("Nothing has that id"));
    assert_eq!(
        browser.get("/ui/search?q=").await.status,
        StatusCode::BAD_REQUEST
    );
    // An MRN is not searchable.
    let mrn = browser.get(&format!("/ui/search?q={MRN}")).await;
    assert_eq!(mrn.status, StatusCode::NOT_FOUND);
    // A search that found nothing is recorded without its term.
    let rows = audit_rows(&app, "console.search").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut rows = rows;
    while rows.len() < 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows = audit_rows(&app, "console.search").await;
    }
    assert!(
        rows.iter()
            .all(|row| !row["target"].as_str().unwrap().contains(MRN))
    );
    assert!(
        rows.iter()
            .any(|row| row["target"] == "(no match, 14 characters)")
    );
}

#[tokio::test]
async fn no_page_or_export_shows_patient_data_and_a_reveal_is_recorded() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.overdue_after_secs = 60;
    })
    .await;
    deliver(
        &app,
        &failure("evt_phi1", "9300", "EMR down", &minutes_ago(5)),
    )
    .await;
    deliver(
        &app,
        &created_event("evt_phi2", "9301", "pn-phi", &minutes_ago(4)),
    )
    .await;
    app.register(
        "9302",
        json!({ "patient_note_id": "pn-late", "submitted_at": minutes_ago(3) }),
    )
    .await;
    let browser = Browser::signed_in(&app, OPS_TOKEN).await;
    let mut seen = String::new();
    for path in [
        "/ui",
        "/ui/jobs",
        "/ui/jobs?status=failed",
        "/ui/jobs?status=pending",
        "/ui/jobs/9300",
        "/ui/jobs/9301",
        "/ui/jobs/9302",
        "/ui/jobs.csv",
        "/ui/jobs.csv?status=failed",
        "/ui/overdue",
        "/ui/audit",
        "/ui/search?q=pn-nothing",
    ] {
        let page = browser.get(path).await;
        let found = page.status.is_success() || path.starts_with("/ui/search");
        assert!(found, "{path}: {}", page.status);
        seen.push_str(&page.body);
    }
    for secret in [NOTE_TEXT, SUBJECT, MRN] {
        assert!(!seen.contains(secret), "{secret} shown");
    }
    assert!(
        seen.contains("***9977"),
        "MRNs show their last four characters"
    );

    // The reveal (phi): a POST with the CSRF token, recorded before it is
    // shown.
    let browser = Browser::signed_in(&app, PHI_TOKEN).await;
    let page = browser.get("/ui/jobs/9300").await;
    let csrf = csrf_of(&page.body);
    let forged = browser
        .post("/ui/jobs/9300/reveal-mrn", &[("csrf", "nope")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!forged.body.contains(MRN));
    let revealed = browser
        .post("/ui/jobs/9300/reveal-mrn", &[("csrf", &csrf)])
        .await;
    assert_eq!(revealed.status, 200);
    assert!(revealed.body.contains(MRN));
    assert!(!revealed.body.contains(NOTE_TEXT));
    let rows = audit_rows(&app, "console.mrn.reveal").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "records");
    assert_eq!(rows[0]["target"], "9300");
    assert!(!rows[0]["target"].as_str().unwrap().contains(MRN));
}

#[tokio::test]
async fn every_look_is_audited_and_the_trail_needs_operate() {
    let app = console_app().await;
    deliver(
        &app,
        &created_event("evt_a1", "9400", "pn-a", &minutes_ago(5)),
    )
    .await;
    let reader = Browser::signed_in(&app, TOKEN).await;
    reader.get("/ui/jobs/9400").await;
    reader.get("/ui/jobs?status=created").await;
    reader.get("/ui/search?q=pn-a").await;
    reader.get("/ui/jobs.csv?status=created").await;
    // The status API's reads of a job and a note are audited too.
    app.get("/v1/jobs/9400").await;
    app.get("/v1/patient-notes/pn-a").await;

    for (action, target) in [
        ("console.sign_in", "from 127.0.0.1"),
        ("console.job.view", "9400"),
        ("console.jobs.view", "status=created"),
        ("console.search", "pn-a"),
        ("console.export", "status=created"),
        ("api.job.read", "/v1/jobs/9400"),
        ("api.note.read", "/v1/patient-notes/pn-a"),
    ] {
        let rows = audit_rows(&app, action).await;
        assert_eq!(rows.len(), 1, "{action}: {rows:?}");
        assert_eq!(rows[0]["actor"], "token-1", "{action}");
        assert_eq!(rows[0]["target"], target, "{action}");
        let request_id = rows[0]["request_id"].as_str().unwrap_or_default();
        assert_eq!(request_id.len(), 36, "{action}: a request id");
    }
    // The trail is for operators, on both sides.
    assert_eq!(reader.get("/ui/audit").await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/v1/audit").await.status(), StatusCode::FORBIDDEN);
    let operator = Browser::signed_in(&app, OPS_TOKEN).await;
    let trail = operator.get("/ui/audit?actor=token-1").await;
    assert_eq!(trail.status, 200);
    assert!(trail.body.contains("console.export"));
    assert!(
        !trail.body.contains("console.audit.view"),
        "filtered to token-1"
    );
    let (status, page) = app
        .call(
            reqwest::Method::GET,
            "/v1/audit?limit=2",
            Some(OPS_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().expect("more rows");
    let (_, older) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/audit?before={before}"),
            Some(OPS_TOKEN),
            None,
            &[],
        )
        .await;
    assert!(
        older["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["id"].as_i64().unwrap() < before)
    );
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            "/v1/audit?limit=0",
            Some(OPS_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn audit_rows_past_their_retention_are_deleted() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.audit_retention_days = 30;
        config.purge_interval_secs = 1;
    })
    .await;
    app.get("/v1/jobs/1").await;
    app.get("/v1/jobs/2").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while audit_rows(&app, "api.job.read").await.len() < 2 {
        assert!(Instant::now() < deadline, "both reads are recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = app.sql().await;
    sqlx::query("update audit_log set at_ns = 0 where target = '/v1/jobs/1'")
        .execute(&db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = audit_rows(&app, "api.job.read").await;
        if rows.len() == 1 {
            assert_eq!(rows[0]["target"], "/v1/jobs/2");
            break;
        }
        assert!(Instant::now() < deadline, "the old row is purged: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn recovery_says_what_it_will_ask_then_runs_in_the_background() {
    let cobalt = FakeCobalt::start(None).await;
    let point = point_at(&cobalt);
    let app = spawn_app_with(move |config| {
        point(config);
        console_on(config);
        config.overdue_after_secs = 60;
    })
    .await;
    // Two jobs overdue; Cobalt has their outcomes, whose delivery was lost.
    for (job, created) in [("9500", true), ("9501", false)] {
        app.register(
            job,
            json!({ "patient_note_id": format!("pn-{job}"), "submitted_at": minutes_ago(10) }),
        )
        .await;
        let event = if created {
            created_event(
                &format!("evt_r{job}"),
                job,
                &format!("pn-{job}"),
                &minutes_ago(8),
            )
        } else {
            failure(&format!("evt_r{job}"), job, "EMR down", &minutes_ago(8))
        };
        cobalt.add_event(event, "failed");
    }

    let reader = Browser::signed_in(&app, TOKEN).await;
    let overdue = reader.get("/ui/overdue").await;
    assert!(
        overdue.body.contains("2 job(s) have waited"),
        "{}",
        overdue.body
    );
    assert!(
        overdue.body.contains(
            "Recovery will ask Cobalt about the <strong>2</strong> oldest overdue job(s)"
        )
    );
    assert!(
        overdue
            .body
            .contains("needs a token with the operate permission")
    );
    assert!(!overdue.body.contains("Recover now"));
    let refused = reader
        .post("/ui/recoveries", &[("csrf", &reader.csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let operator = Browser::signed_in(&app, OPS_TOKEN).await;
    let overdue = operator.get("/ui/overdue").await;
    assert!(overdue.body.contains("Recover now"));
    let forged = operator.post("/ui/recoveries", &[("csrf", "x")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let started = operator
        .post("/ui/recoveries", &[("csrf", &operator.csrf)])
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let run = started.location().to_owned();
    assert!(run.starts_with("/ui/recoveries/"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = loop {
        let page = operator.get(&run).await;
        assert_eq!(page.status, 200);
        if page.body.contains("Finished") {
            break page;
        }
        assert!(
            page.body.contains("http-equiv=\"refresh\""),
            "refreshes while running"
        );
        assert!(Instant::now() < deadline, "the recovery finishes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!finished.body.contains("http-equiv=\"refresh\""));
    assert!(
        finished
            .body
            .contains("Recovered (their delivery had been lost)</dt><dd>2"),
        "{}",
        finished.body
    );
    for (job, status) in [("9500", "created"), ("9501", "failed")] {
        let (_, state) = app.get_json(&format!("/v1/jobs/{job}")).await;
        assert_eq!(state["status"], status);
    }
    let rows = audit_rows(&app, "console.recovery.start").await;
    assert_eq!(rows[0]["actor"], "ops");
    assert!(
        rows[0]["target"]
            .as_str()
            .unwrap()
            .starts_with("2 overdue job(s)")
    );
}

#[tokio::test]
async fn an_mrn_is_not_shown_when_its_viewing_cannot_be_recorded() {
    let app = spawn_app_with(|config| {
        console_on(config);
        config.write_timeout_ms = 300;
    })
    .await;
    deliver(
        &app,
        &failure("evt_lock1", "9600", "EMR down", &minutes_ago(5)),
    )
    .await;
    let browser = Browser::signed_in(&app, PHI_TOKEN).await;
    let lock = app.hold_write_lock().await;
    // Pages that show no patient data go on (their rows wait in memory).
    let page = browser.get("/ui/jobs/9600").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let refused = browser
        .post("/ui/jobs/9600/reveal-mrn", &[("csrf", &browser.csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!refused.body.contains(MRN));
    lock.release().await;
    let shown = browser
        .post("/ui/jobs/9600/reveal-mrn", &[("csrf", &browser.csrf)])
        .await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains(MRN));
    // The page view during the lock was recorded once the lock was gone.
    assert_eq!(audit_rows(&app, "console.mrn.reveal").await.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_rows(&app, "console.job.view").await.is_empty() {
        assert!(Instant::now() < deadline, "the queued row is written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn over_https_the_console_cookie_is_secure() {
    let certs = tempfile::TempDir::new().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(
        certs.path().join("key.pem"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(certs.path().join("cert.pem"), certified.cert.pem()).unwrap();
    let app = spawn_app_with(|config| {
        console_on(config);
        config.tls_cert_path = Some(certs.path().join("cert.pem"));
        config.tls_key_path = Some(certs.path().join("key.pem"));
    })
    .await;
    let base = app.console.clone().unwrap().replace("http://", "https://");
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(format!("{base}/ui/sign-in"))
        .header("origin", &base)
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain HTTP on the console port gets nothing.
    let plain = reqwest::get(format!("{}/ui/sign-in", app.console.as_ref().unwrap())).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
