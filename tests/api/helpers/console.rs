//! The operator console as its tests see it: a [`Browser`] with its session
//! cookie and CSRF token, a console-enabled server, and the realistic data
//! the console tests deliver (outcomes carrying patient data, dated a few
//! minutes ago) and read back (audit rows).

use std::time::{Duration, Instant};

use cobalt_receiver::config::Config;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

/// A browser's view of the console: its session cookie and CSRF token.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: String,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            base: app.console.clone().expect("the console is on"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Signs in with `token`, as the sign-in form does.
    pub async fn signed_in(app: &TestApp, token: &str) -> Self {
        Self::new(app).sign_in(token).await
    }

    /// A browser of the console at `base`, opening a new connection for
    /// every request (as through a balancer that spreads connections).
    pub fn at(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
        }
    }

    pub async fn sign_in(self, token: &str) -> Self {
        let mut browser = self;
        let page = browser
            .post("/ui/sign-in", &[("token", token), ("next", "/ui")])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let cookie = page.headers["set-cookie"].to_str().unwrap();
        let id = cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("cobalt_console=")
            .unwrap();
        browser.cookie = Some(id.to_owned());
        let today = browser.get("/ui").await;
        assert_eq!(today.status, StatusCode::OK);
        browser.csrf = csrf_of(&today.body);
        browser
    }

    pub async fn get(&self, path: &str) -> Page {
        let request = || {
            let mut request = self.client.get(format!("{}{path}", self.base));
            if let Some(cookie) = &self.cookie {
                request = request.header("cookie", format!("cobalt_console={cookie}"));
            }
            request
        };
        // A kept-alive connection the server closed as idle just as the
        // request went out fails without an answer; a browser sends such
        // a GET again on a new connection, and so does this one (once).
        let response = match request().send().await {
            Ok(response) => response,
            Err(error) if error.is_request() => {
                eprintln!("GET {path} failed on a kept-alive connection ({error:?}); sent again");
                request().send().await.unwrap()
            }
            Err(error) => panic!("GET {path}: {error:?}"),
        };
        page_of(response).await
    }

    /// A form POST from this console's own page.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    pub async fn post_from(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("cobalt_console={cookie}"));
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        page_of(request.send().await.unwrap()).await
    }
}

pub async fn page_of(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + 64].to_owned()
}

pub async fn console_app() -> TestApp {
    spawn_app_with(console_on).await
}

pub fn console_on(config: &mut Config) {
    config.console_listen = Some("127.0.0.1:0".parse().unwrap());
}

pub fn minutes_ago(minutes: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
        .format(&Rfc3339)
        .unwrap()
}

/// A failed outcome that carries patient data, as Cobalt's may.
pub fn failure(event: &str, job: &str, reason: &str, created: &str) -> Value {
    let mut event = failed_event(event, job, &format!("pn-{job}"), created);
    event["data"]["failure_reason"] = json!(reason);
    event["data"]["patient_mrn"] = json!(MRN);
    event["data"]["subject"] = json!(SUBJECT);
    event["data"]["note"] = json!(NOTE_TEXT);
    event["data"]["location_id"] = json!("loc-2");
    event
}

pub async fn deliver(app: &TestApp, event: &Value) {
    let response = app.post_webhook(&event.to_string()).await;
    assert_eq!(response.status(), 200);
}

/// The audit rows of `action`, newest first, through the API.
pub async fn audit_rows(app: &TestApp, action: &str) -> Vec<Value> {
    // Rows are written in the background, a moment after the request.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, page) = app
            .call(
                reqwest::Method::GET,
                &format!("/v1/audit?action={action}"),
                Some(OPS_TOKEN),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let rows = page["items"].as_array().unwrap().clone();
        if !rows.is_empty() || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An event as Cobalt sends it, `minutes_ago` old, for one patient at one
/// location.
pub fn aged_event(base: Value, minutes_ago: i64, mrn: &str, location: &str) -> Value {
    let mut event = base;
    event["created"] = json!(rfc3339_ago(time::Duration::minutes(minutes_ago)));
    event["data"]["patient_mrn"] = json!(mrn);
    event["data"]["location_id"] = json!(location);
    event
}

/// The `n`th failed outcome of the browser round: event `evt_bf{n}` of
/// job `41010 + n`, with one reason, `20 + n` minutes old.
pub fn numbered_failure(n: u32, reason: &str, code: &str, mrn: &str, location: &str) -> Value {
    let mut base = failed_event(
        &format!("evt_bf{n}"),
        &format!("{}", 41_010 + n),
        &format!("pn-bf{n}"),
        "",
    );
    base["data"]["failure_reason"] = json!(reason);
    base["data"]["reasons"] = json!([{ "code": code, "description": reason }]);
    aged_event(base, 20 + i64::from(n), mrn, location)
}

/// `age` ago, in RFC 3339.
pub fn rfc3339_ago(age: time::Duration) -> String {
    (time::OffsetDateTime::now_utc() - age)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
