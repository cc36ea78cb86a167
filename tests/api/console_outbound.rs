//! The console's Outbound page: each outgoing webhook endpoint's queue and
//! the messages needing attention, an endpoint failing made obvious, and
//! **Send again** (operate, CSRF, audited) until the clinic's app takes
//! them.

use std::time::{Duration, Instant};

use axum::http::StatusCode as AxumStatus;
use reqwest::StatusCode;

use crate::helpers::console::*;
use crate::helpers::*;

/// What the clinic's app answers while it is down: markup, and a
/// direction-changing character, both shown for what they are.
const REFUSAL: &str = "<b>maintenance</b> \u{202e}back soon";

/// How the clinic's app answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 500, with [`REFUSAL`].
    Down,
    /// Not yet: each request waits until the app is up (so a message sent
    /// again stays queued while the test looks at it).
    Starting,
    /// 200.
    Up,
}

/// The clinic's app, at `url`.
struct ClinicApp {
    url: String,
    mode: tokio::sync::watch::Sender<Mode>,
}

impl ClinicApp {
    async fn start() -> Self {
        let (mode, answers) = tokio::sync::watch::channel(Mode::Down);
        let router = axum::Router::new().fallback(move || {
            let mut answers = answers.clone();
            async move {
                if *answers.borrow_and_update() == Mode::Down {
                    return (AxumStatus::INTERNAL_SERVER_ERROR, REFUSAL);
                }
                let _ = answers.wait_for(|mode| *mode == Mode::Up).await;
                (AxumStatus::OK, "")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{address}/hooks/cobalt"),
            mode,
        }
    }

    fn is(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// A console whose changes go to `clinic`, failed after two attempts a
/// second apart, once its endpoint's sender has started (a new endpoint
/// takes the changes from when it was added).
async fn app_sending_to(clinic: &ClinicApp) -> TestApp {
    let url = clinic.url.clone();
    let app = spawn_app_with(move |config| {
        console_on(config);
        send_outbound_to(config, &url, &[1]);
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.count("outbound_endpoints").await == 0 {
        assert!(Instant::now() < deadline, "the endpoint's sender starts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app
}

/// The Outbound page once `done` holds for it.
async fn page_once(browser: &Browser, what: &str, done: impl Fn(&str) -> bool) -> Page {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = browser.get("/ui/outbound").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        if done(&page.body) {
            return page;
        }
        assert!(Instant::now() < deadline, "{what}: {}", page.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the failed messages the page offers to send again.
fn failed_ids(html: &str) -> Vec<String> {
    html.match_indices("name=\"id\" value=\"")
        .map(|(at, field)| {
            let rest = &html[at + field.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

/// Where a message stands, read from the database.
async fn message_state(app: &TestApp, id: &str) -> String {
    let db = app.sql().await;
    let state = sqlx::query_scalar("select state from outbound_messages where id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    state
}

/// `cobalt_receiver_outbound_messages_total` of `clinic-app` delivered
/// (the counters are the test process's, shared by its tests).
async fn delivered_total(app: &TestApp) -> f64 {
    app.metrics()
        .await
        .lines()
        .find(|line| {
            line.starts_with("cobalt_receiver_outbound_messages_total{")
                && line.contains("endpoint=\"clinic-app\"")
                && line.contains("outcome=\"delivered\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn a_failing_endpoint_is_shown_and_its_messages_are_sent_again_by_an_operator() {
    let clinic = ClinicApp::start().await;
    let app = app_sending_to(&clinic).await;
    let delivered_before = delivered_total(&app).await;
    for (event, job) in [("evt_ob1", "9700"), ("evt_ob2", "9701")] {
        deliver(&app, &failure(event, job, "EMR down", &minutes_ago(5))).await;
    }

    // Each failed on both attempts: the page says so, and since when.
    let operator = Browser::signed_in(&app, OPS_TOKEN).await;
    let page = page_once(&operator, "both messages fail", |body| {
        failed_ids(body).len() == 2
    })
    .await;
    let body = &page.body;
    assert!(
        body.contains("<a href=\"/ui/outbound\" aria-current=\"page\">Outbound</a>"),
        "in the navigation"
    );
    assert!(body.contains("Endpoint <code>clinic-app</code>"), "{body}");
    assert!(body.contains(&clinic.url), "the URL (no password in it)");
    assert!(body.contains("job.registered, job.created, job.failed, job.overdue"));
    assert!(body.contains("No: messages carry no MRN"));
    assert!(body.contains("Failing since "), "{body}");
    assert!(body.contains("<dt>Failed</dt><dd>2</dd>"), "{body}");
    assert!(body.contains("Send all failed again (2)"));
    for job in ["9700", "9701"] {
        assert!(body.contains(&format!("<a href=\"/ui/jobs/{job}\">{job}</a>")));
    }
    assert!(body.contains("<td>job.failed</td>"));
    assert!(body.contains("<td>500</td>"), "the last status");
    assert!(
        body.contains("&lt;b&gt;maintenance&lt;/b&gt; ⟨U+202E⟩back soon"),
        "the app's answer, shown for what it is: {body}"
    );
    assert!(!body.contains("<b>maintenance"));
    for secret in [NOTE_TEXT, SUBJECT, MRN] {
        assert!(!body.contains(secret), "{secret} shown");
    }
    let ids = failed_ids(body);
    assert!(ids.iter().all(|id| id.starts_with("msg_")), "{ids:?}");

    // Without operate: no button, and the form is refused.
    let reader = Browser::signed_in(&app, TOKEN).await;
    let read = reader.get("/ui/outbound").await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(!read.body.contains("Send again"));
    assert!(!read.body.contains("Send all failed again"));
    assert!(
        read.body
            .contains("Sending messages again needs a token with the operate permission.")
    );
    let refused = reader
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &reader.csrf), ("id", &ids[0])],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Without the session's CSRF token, or from another site: refused.
    let forged = operator
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", "nope"), ("id", &ids[0])],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let unsigned = operator
        .post("/ui/outbound/clinic-app/resend", &[("id", &ids[0])])
        .await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    let elsewhere = operator
        .post_from(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &operator.csrf), ("id", &ids[0])],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    // An endpoint that is not configured.
    let unknown = operator
        .post("/ui/outbound/billing/resend", &[("csrf", &operator.csrf)])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for id in &ids {
        assert_eq!(message_state(&app, id).await, "failed", "nothing was sent");
    }
    assert!(audit_rows(&app, "console.outbound.resend").await.is_empty());

    // One sent again (the app is coming back): queued, its schedule from
    // the start, recorded before the answer.
    clinic.is(Mode::Starting);
    let (first, second) = (&ids[0], &ids[1]);
    let sent = operator
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &operator.csrf), ("id", first)],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert_eq!(sent.location(), "/ui/outbound");
    assert_eq!(message_state(&app, first).await, "queued");
    assert_eq!(message_state(&app, second).await, "failed");
    let rows = audit_rows(&app, "console.outbound.resend").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "ops");
    assert_eq!(
        rows[0]["target"],
        format!("endpoint clinic-app message {first}")
    );

    // The rest sent again at once; then the app is back.
    let sent = operator
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &operator.csrf)],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    assert_eq!(message_state(&app, second).await, "queued");
    let rows = audit_rows(&app, "console.outbound.resend").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["target"], "endpoint clinic-app all failed (1)");
    clinic.is(Mode::Up);

    let page = page_once(&operator, "both are delivered", |body| {
        body.contains("<dt>Queued</dt><dd>0</dd>")
    })
    .await;
    assert!(page.body.contains("None: no message has failed"));
    assert!(!page.body.contains("Failing since"), "{}", page.body);
    assert!(page.body.contains("<dt>Failed</dt><dd>0</dd>"));
    assert!(
        page.body
            .contains("<dt>Oldest change queued</dt><dd>none</dd>")
    );
    assert!(!page.body.contains("<dt>Last delivered</dt><dd>never"));
    for id in &ids {
        assert_eq!(message_state(&app, id).await, "delivered");
    }
    assert!(delivered_total(&app).await >= delivered_before + 2.0);

    // A message that is not failed (any more) is not sent again, and what
    // was typed for it is not recorded.
    let again = operator
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &operator.csrf), ("id", first)],
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(message_state(&app, first).await, "delivered");
    let rows = audit_rows(&app, "console.outbound.resend").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0]["target"],
        format!(
            "endpoint clinic-app message (no match, {} characters)",
            first.len()
        )
    );

    // Every view was audited.
    let views = audit_rows(&app, "console.outbound.view").await;
    assert!(views.iter().any(|row| row["actor"] == "ops"));
    assert!(views.iter().any(|row| row["actor"] == "token-1"));
}

#[tokio::test]
async fn without_an_endpoint_the_page_names_the_keys_that_configure_one() {
    let app = console_app().await;
    let reader = Browser::signed_in(&app, TOKEN).await;
    let page = reader.get("/ui/outbound").await;
    assert_eq!(page.status, StatusCode::OK);
    for key in [
        "No outgoing webhook endpoint is configured",
        "[[outbound_webhooks]]",
        "COBALT_RECEIVER_OUTBOUND_URL",
        "COBALT_RECEIVER_OUTBOUND_SECRET",
    ] {
        assert!(page.body.contains(key), "{key}: {}", page.body);
    }
    let rows = audit_rows(&app, "console.outbound.view").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "token-1");

    let operator = Browser::signed_in(&app, OPS_TOKEN).await;
    let unknown = operator
        .post(
            "/ui/outbound/clinic-app/resend",
            &[("csrf", &operator.csrf)],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}
