//! Cobalt's API, as this service calls it: submitting a note, and listing
//! the events Cobalt created (to recover the ones whose delivery was lost).
//!
//! Every call carries the application's `client_id` and `client_secret`
//! and one linked account's `access_token`. Credentials never reach a log
//! line or an error message, and neither does a note: errors name the call
//! and what went wrong.
//!
//! Listing calls are paced (`cobalt_requests_per_sec`) and retried with
//! backoff on 429 and 5xx (honouring `Retry-After`); 401 and 403 are final.
//! Both documented shapes of the event list are read (see
//! `docs/cobalt.md`): `id`/`type`/`created` or
//! `event_id`/`event_type`/`created_at`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{Config, ConfigError};
use crate::domain::event::{CREATED, FAILED};
use crate::monitoring::{self, ListOutcome, SubmitOutcome};
use crate::secret::Secret;
use crate::telemetry;

/// Attempts of one listing call before the sweep gives it up.
const LIST_ATTEMPTS: u32 = 4;
/// Longest pause a `Retry-After` may ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One linked EMR account: its access token, and the reference id Cobalt
/// labels its events with, when configured.
#[derive(Clone)]
pub struct Account {
    pub reference_id: Option<String>,
    token: Secret,
}

/// The application's credentials and its accounts.
#[derive(Clone)]
pub struct Credentials {
    client_id: Secret,
    client_secret: Secret,
    accounts: Vec<Account>,
}

impl Credentials {
    /// The credentials the configuration gives, or `None` when it gives
    /// none (submission and recovery are then off).
    pub fn from_config(config: &Config) -> Option<Self> {
        let mut accounts: Vec<Account> = config
            .cobalt_access_token
            .iter()
            .map(|token| Account {
                reference_id: None,
                token: token.clone(),
            })
            .collect();
        for entry in &config.cobalt_access_tokens {
            let (reference_id, token) = entry.expose().split_once(':')?;
            accounts.push(Account {
                reference_id: Some(reference_id.to_owned()),
                token: Secret::new(token),
            });
        }
        Some(Self {
            client_id: config.cobalt_client_id.clone()?,
            client_secret: config.cobalt_client_secret.clone()?,
            accounts: (!accounts.is_empty()).then_some(accounts)?,
        })
    }

    /// Checks the `cobalt_*` keys: which key is missing or malformed, and
    /// why, when the configuration gives some credentials but not a usable
    /// set.
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        for entry in &config.cobalt_access_tokens {
            match entry.expose().split_once(':') {
                Some((reference, token)) if !reference.is_empty() && !token.is_empty() => {}
                _ => {
                    return Err(ConfigError::key(
                        "cobalt_access_tokens",
                        "each entry must be ACCESS_TOKEN_REFERENCE_ID:TOKEN",
                    ));
                }
            }
        }
        let any_token =
            config.cobalt_access_token.is_some() || !config.cobalt_access_tokens.is_empty();
        let set = [
            config.cobalt_client_id.is_some(),
            config.cobalt_client_secret.is_some(),
            any_token,
        ];
        if set.iter().any(|s| *s) && !set.iter().all(|s| *s) {
            let missing = if !set[0] {
                "cobalt_client_id"
            } else if !set[1] {
                "cobalt_client_secret"
            } else {
                "cobalt_access_token"
            };
            return Err(ConfigError::key(
                missing,
                "is needed: Cobalt's API takes a client id, a client secret and an access token",
            ));
        }
        if !(config.cobalt_api_url.starts_with("https://")
            || config.cobalt_api_url.starts_with("http://"))
        {
            return Err(ConfigError::key(
                "cobalt_api_url",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The account named by `reference_id`, else the default (first) one.
    pub fn account(&self, reference_id: Option<&str>) -> Option<&Account> {
        match reference_id {
            Some(reference) => self
                .accounts
                .iter()
                .find(|a| a.reference_id.as_deref() == Some(reference)),
            None => self.accounts.first(),
        }
    }
}

/// Cobalt's answer to a note submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub job_id: String,
    pub patient_note_id: String,
}

/// Why a submission did not return a job. Whether the note may exist is
/// part of the answer: the caller must not guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// Cobalt refused the request (4xx): no note was created.
    Rejected { status: u16, message: String },
    /// Cobalt refused this service's credentials: no note was created.
    Unauthorized,
    /// No connection was made: no note was created.
    Unreachable,
    /// No answer in time: the note may have been created.
    TimedOut,
    /// A 5xx or an unreadable answer: the note may have been created.
    Failed { status: Option<u16> },
}

/// Why a listing call failed, after its retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("Cobalt refused the credentials (HTTP {0})")]
    Unauthorized(u16),
    #[error("Cobalt kept answering HTTP {0}")]
    Unavailable(u16),
    #[error("Cobalt could not be reached at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("Cobalt's answer could not be read: {0}")]
    Malformed(String),
}

/// What to list: Cobalt's query parameters.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub job_id: Option<String>,
    pub event_type: Option<&'static str>,
    pub delivery_status: Option<&'static str>,
    /// `YYYY-MM-DD`
    pub start_date: Option<String>,
    pub page: u32,
}

/// One page of the event list.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events as envelopes a delivery would carry (compact JSON text).
    pub events: Vec<String>,
    /// Rows that could not be read as events (counted, not fatal).
    pub unreadable: usize,
    pub total_pages: u32,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    /// Earliest instant the next listing call may start.
    next_call: Mutex<Instant>,
    spacing: Duration,
    timeout: Duration,
}

impl Client {
    pub fn new(config: &Config, credentials: Credentials) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.cobalt_timeout())
            .connect_timeout(config.cobalt_timeout().min(Duration::from_secs(5)))
            .user_agent(concat!("cobalt-receiver/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: config.cobalt_api_url.trim_end_matches('/').to_owned(),
            credentials,
            next_call: Mutex::new(Instant::now()),
            spacing: Duration::from_secs(1) / config.cobalt_requests_per_sec.max(1),
            timeout: config.cobalt_timeout(),
        })
    }

    /// Longest a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sends one call to Cobalt, with the credentials' headers and what
    /// `build` adds, as a span of its own (kind client, its method, path
    /// and status) whose `traceparent` the call carries when traces are on.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &'static str,
        account: &Account,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let span = tracing::debug_span!(
            "cobalt call",
            otel.name = format!("{method} {path}"),
            otel.kind = "client",
            http.request.method = %method,
            url.path = path,
            http.response.status_code = tracing::field::Empty,
        );
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(telemetry::trace_headers(&span))
            .header("client_id", self.credentials.client_id.expose())
            .header("client_secret", self.credentials.client_secret.expose())
            .header("access_token", account.token.expose());
        let sent = build(request).send().instrument(span.clone()).await;
        if let Ok(response) = &sent {
            span.record("http.response.status_code", response.status().as_u16());
        }
        sent
    }

    /// `POST /v1/patient-notes` with `body` (Cobalt's own request body).
    pub async fn submit(&self, account: &Account, body: &Value) -> Result<Submitted, SubmitError> {
        let sent = self
            .send(reqwest::Method::POST, "/v1/patient-notes", account, |r| {
                r.json(body)
            })
            .await;
        let result = match sent {
            Err(error) if error.is_connect() => Err(SubmitError::Unreachable),
            Err(error) if error.is_timeout() => Err(SubmitError::TimedOut),
            Err(_) => Err(SubmitError::Failed { status: None }),
            Ok(response) => read_submission(response).await,
        };
        monitoring::note_submitted(submit_outcome(&result));
        result
    }

    /// One page of `GET /v1/webhook-events`, paced, retried on 429 and 5xx.
    pub async fn list_events(
        &self,
        account: &Account,
        query: &EventQuery,
    ) -> Result<EventPage, ListError> {
        let mut parameters: Vec<(&str, String)> = vec![
            ("page", query.page.max(1).to_string()),
            ("page_size", "100".into()),
            ("sort", "created_at".into()),
        ];
        if let Some(job_id) = &query.job_id {
            parameters.push(("job_id", job_id.clone()));
        }
        if let Some(event_type) = query.event_type {
            parameters.push(("event_type", event_type.into()));
        }
        if let Some(status) = query.delivery_status {
            parameters.push(("delivery_status", status.into()));
        }
        if let Some(start) = &query.start_date {
            parameters.push(("start_date", start.clone()));
        }
        let mut backoff = Duration::from_secs(1);
        let mut last_status = 0;
        let mut unreachable = String::new();
        for attempt in 1..=LIST_ATTEMPTS {
            self.pace().await;
            let sent = self
                .send(reqwest::Method::GET, "/v1/webhook-events", account, |r| {
                    r.query(&parameters)
                })
                .await;
            let pause = match sent {
                Err(error) => {
                    monitoring::events_listed(ListOutcome::Unreachable);
                    last_status = 0;
                    unreachable = crate::request_error::describe(&error, self.timeout);
                    None
                }
                Ok(response) => {
                    let status = response.status();
                    last_status = status.as_u16();
                    if status.is_success() {
                        let page = response
                            .text()
                            .await
                            .map_err(|_| ListError::Malformed("the body was cut off".into()))
                            .and_then(|text| read_page(&text));
                        monitoring::events_listed(match page {
                            Ok(_) => ListOutcome::Ok,
                            Err(_) => ListOutcome::Malformed,
                        });
                        return page;
                    }
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        monitoring::events_listed(ListOutcome::Unauthorized);
                        return Err(ListError::Unauthorized(status.as_u16()));
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        monitoring::events_listed(if status == StatusCode::TOO_MANY_REQUESTS {
                            ListOutcome::RateLimited
                        } else {
                            ListOutcome::ServerError
                        });
                        retry_after(&response)
                    } else {
                        monitoring::events_listed(ListOutcome::Rejected);
                        return Err(ListError::Malformed(format!(
                            "Cobalt answered HTTP {status}"
                        )));
                    }
                }
            };
            if attempt < LIST_ATTEMPTS {
                tokio::time::sleep(pause.unwrap_or(backoff).min(MAX_BACKOFF)).await;
                backoff *= 2;
            }
        }
        Err(if last_status == 0 {
            ListError::Unreachable {
                url: format!("{}/v1/webhook-events", self.base),
                cause: unreachable,
            }
        } else {
            ListError::Unavailable(last_status)
        })
    }

    /// Waits for this call's slot, spacing calls evenly.
    async fn pace(&self) {
        let start = {
            let mut next = self.next_call.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + self.spacing;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

async fn read_submission(response: reqwest::Response) -> Result<Submitted, SubmitError> {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(SubmitError::Unauthorized);
    }
    let body: Option<Value> = response.json().await.ok();
    if status.is_client_error() {
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("Cobalt refused the request")
            .to_owned();
        return Err(SubmitError::Rejected {
            status: status.as_u16(),
            message,
        });
    }
    if !status.is_success() {
        return Err(SubmitError::Failed {
            status: Some(status.as_u16()),
        });
    }
    let body = body.ok_or(SubmitError::Failed {
        status: Some(status.as_u16()),
    })?;
    let job_id = match body.get("job_id") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let patient_note_id = body
        .get("patient_note_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (job_id, patient_note_id) {
        (Some(job_id), Some(note)) => Ok(Submitted {
            job_id,
            patient_note_id: note.to_owned(),
        }),
        _ => Err(SubmitError::Failed {
            status: Some(status.as_u16()),
        }),
    }
}

fn submit_outcome(result: &Result<Submitted, SubmitError>) -> SubmitOutcome {
    match result {
        Ok(_) => SubmitOutcome::Ok,
        Err(SubmitError::Rejected { status: 429, .. }) => SubmitOutcome::RateLimited,
        Err(SubmitError::Rejected { .. }) => SubmitOutcome::Rejected,
        Err(SubmitError::Unauthorized) => SubmitOutcome::Unauthorized,
        Err(SubmitError::Unreachable) => SubmitOutcome::Unreachable,
        Err(SubmitError::TimedOut) => SubmitOutcome::Timeout,
        Err(SubmitError::Failed { status: Some(_) }) => SubmitOutcome::ServerError,
        Err(SubmitError::Failed { status: None }) => SubmitOutcome::Malformed,
    }
}

/// Reads a page in either documented shape.
fn read_page(text: &str) -> Result<EventPage, ListError> {
    let body: Value =
        serde_json::from_str(text).map_err(|e| ListError::Malformed(format!("not JSON ({e})")))?;
    let rows = body
        .get("webhook_events")
        .and_then(Value::as_array)
        .ok_or_else(|| ListError::Malformed("no webhook_events list".into()))?;
    let total_pages = body
        .get("pagination")
        .and_then(|p| p.get("total_pages"))
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let mut events = Vec::with_capacity(rows.len());
    let mut unreadable = 0;
    for row in rows {
        match row.as_object().and_then(envelope) {
            Some(event) => events.push(event),
            None => unreadable += 1,
        }
    }
    Ok(EventPage {
        events,
        unreadable,
        total_pages,
    })
}

/// A listed event as the envelope its delivery would have carried: the
/// fields of shape A, taken from either shape. `None` without an id.
fn envelope(row: &Map<String, Value>) -> Option<String> {
    let field = |a: &str, b: &str| row.get(a).or_else(|| row.get(b)).cloned();
    let id = field("id", "event_id").filter(Value::is_string)?;
    let event = json!({
        "id": id,
        "access_token_reference_id": row.get("access_token_reference_id").cloned().unwrap_or(Value::Null),
        "object": "event",
        "created": field("created", "created_at").unwrap_or(Value::Null),
        "type": field("type", "event_type").unwrap_or(Value::Null),
        "job_id": row.get("job_id").cloned().unwrap_or(Value::Null),
        "data": row.get("data").cloned().unwrap_or(Value::Null),
    });
    Some(event.to_string())
}

/// Whether an event is one this service acts on.
pub fn is_patient_note_outcome(event_type: Option<&str>) -> bool {
    matches!(event_type, Some(CREATED | FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_documented_shapes_read_as_the_same_envelope() {
        let a = r#"{"success":true,"webhook_events":[{"id":"evt_1","access_token_reference_id":"user_1",
            "object":"event","created":"2025-10-09T10:30:00Z","type":"patient_note.created","job_id":"12345",
            "status":"failed","delivered":false,"data":{"patient_note_id":"pn","emr_note_id":"emr"}}],
            "pagination":{"current_page":1,"total_pages":3,"total_count":1,"page_size":50}}"#;
        let b = r#"{"success":true,"webhook_events":[{"event_id":"evt_1","event_type":"patient_note.created",
            "webhook_url":"https://x.example/hook","delivery_status":"failed",
            "data":{"patient_note_id":"pn","emr_note_id":"emr"},"created_at":"2025-10-09T10:30:00Z",
            "job_id":"12345","access_token_reference_id":"user_1"}],
            "pagination":{"current_page":1,"total_pages":3,"total_count":1,"page_size":50}}"#;
        let (a, b) = (read_page(a).unwrap(), read_page(b).unwrap());
        assert_eq!(a.events, b.events);
        assert_eq!(a.total_pages, 3);
        let event: Value = serde_json::from_str(&a.events[0]).unwrap();
        assert_eq!(event["type"], "patient_note.created");
        assert_eq!(event["created"], "2025-10-09T10:30:00Z");
        assert_eq!(event["data"]["emr_note_id"], "emr");
    }

    #[test]
    fn malformed_pages_are_refused_and_rows_without_an_id_counted() {
        assert!(matches!(
            read_page("{\"webhook_events\":"),
            Err(ListError::Malformed(_))
        ));
        assert!(matches!(
            read_page(r#"{"webhook_events":"oops"}"#),
            Err(ListError::Malformed(_))
        ));
        let page = read_page(r#"{"webhook_events":[{"type":"x"}, 5]}"#).unwrap();
        assert_eq!(
            (page.events.len(), page.unreadable, page.total_pages),
            (0, 2, 1)
        );
    }

    #[test]
    fn the_example_file_s_cobalt_keys_are_usable() {
        let config = crate::config::from_toml(include_str!("../config.example.toml")).unwrap();
        Credentials::check(&config).unwrap();
    }
}
