//! A fake Cobalt: a real HTTP server on a loopback port, for end-to-end
//! tests of everything that talks to Cobalt (submitting notes, receiving
//! their outcome webhooks, recovering missed ones from the event list).
//!
//! It follows the facts in `docs/cobalt.md`: the two calls
//! `POST /v1/patient-notes` and `GET /v1/webhook-events` with their
//! credential headers, both documented response shapes of the event list,
//! and the documented delivery policy (5 s timeout, one retry 1 s later on a
//! 5xx, a 429 or a network error, with a 2 s timeout). On top of that, tests
//! can inject what a real Cobalt does on a bad day: lost deliveries, error
//! answers, malformed answers and slow answers.
//!
//! Everything it decides is deterministic (the losses come from a seeded
//! xorshift), so a failing test can be rerun and fail the same way.
//!
//! This file holds what tests use: the constants, [`FakeCobalt`] and its
//! controls, and [`point_at`]. The rest:
//!
//! - `server`: the router, credential checks, injected failures and stalls;
//! - `notes`: `POST /v1/patient-notes`, accepting and validating a note;
//! - `outcomes`: creating a note's outcome event and delivering it;
//! - `events`: `GET /v1/webhook-events`, its filters, sorting, pages, shapes;
//! - `state`: what the handlers and delivery tasks share and record;
//! - `losses`: the seeded choice of lost deliveries;
//! - `ids`: Cobalt-like ids and timestamps;
//! - `tests`: tests of the fake itself against the documented Cobalt.

mod events;
mod ids;
mod losses;
mod notes;
mod outcomes;
mod server;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use cobalt_receiver::config::Config;
use cobalt_receiver::secret::Secret;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;

use ids::now_rfc3339;
use losses::LossPlan;
use state::{Record, Shared};

/// The credentials the fake accepts; for tests only.
pub const CLIENT_ID: &str = "ci_test_fake_client";
pub const CLIENT_SECRET: &str = "cs_test_fake_secret_not_real";
pub const ACCESS_TOKEN: &str = "at_test_fake_access_token";
/// The `access_token_reference_id` of [`ACCESS_TOKEN`]'s account: the one
/// the test helpers' events (`helpers::created_event`) carry too.
pub const REFERENCE_ID: &str = "user_test";

pub const NOTES_PATH: &str = "/v1/patient-notes";
pub const EVENTS_PATH: &str = "/v1/webhook-events";
/// The locations of every account of the fake.
pub const LOCATIONS: [&str; 2] = ["loc-1", "loc-2"];
/// The `webhook_url` shape B shows when the fake delivers nowhere.
pub const DEFAULT_WEBHOOK_URL: &str = "https://receiver.example.com/webhooks/cobalt";
/// The second registered URL of shape B: each event is listed once per URL.
pub const STAGING_WEBHOOK_URL: &str = "https://staging.example.com/webhooks/cobalt";
/// The `failure_reason` of a note whose MRN ends with `-F`.
pub const FAILURE_REASON: &str = "EMR rejected the note";

/// The two documented response shapes of `GET /v1/webhook-events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Rows are the event envelopes plus `status`, `delivered`,
    /// `delivery_attempts`, `last_delivery_attempt`, `response_status_code`.
    A,
    /// Rows are `event_id`, `event_type`, `webhook_url`, `delivery_status`,
    /// `data`, `created_at`, `job_id`, `access_token_reference_id`; each event
    /// appears once per registered URL (twice here).
    B,
}

/// How a delivery chosen by [`FakeCobalt::lose_share`] is lost. Whatever the
/// mode, the receiver never sees the event; the mode only changes what the
/// event list says about the attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Not lost: delivered (or not, when there is no webhook URL) normally.
    None,
    /// Never sent: `delivery_attempts` 0.
    NoAnswer,
    /// As if the receiver took more than 5 s: one attempt, no status code,
    /// no retry (Cobalt never retries a timeout).
    Timeout,
    /// As if the first attempt got a 503 and the retry was lost: two
    /// attempts, `response_status_code` 503.
    ServerErrorThenLostRetry,
}

/// A fake Cobalt listening on `url` until dropped.
pub struct FakeCobalt {
    /// `http://127.0.0.1:PORT`, without a trailing slash: the base URL to
    /// configure in place of `https://api.usecobalt.com`.
    pub url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeCobalt {
    /// Starts the server. `webhook_url` is where outcome events are delivered;
    /// with `None` they are never delivered, only listed (as `failed`, with no
    /// attempt), which is what a receiver that was down for good would see.
    pub async fn start(webhook_url: Option<String>) -> FakeCobalt {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the fake Cobalt");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::new(webhook_url));
        let router = server::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeCobalt {
            url,
            shared,
            server,
        }
    }

    /// Loses `share` (0.0..=1.0) of the outcome deliveries from now on. Each
    /// accepted note draws from a xorshift seeded with `seed`, in the order
    /// the notes are accepted, so the same test loses the same notes on every
    /// run. Lost ones cycle through [`Loss::NoAnswer`], [`Loss::Timeout`],
    /// [`Loss::ServerErrorThenLostRetry`]. Only matters with a webhook URL.
    pub fn lose_share(&self, share: f64, seed: u64) {
        assert!(
            (0.0..=1.0).contains(&share),
            "share {share} is not in 0.0..=1.0"
        );
        self.shared.lock().loss = Some(LossPlan::new(share, seed));
    }

    pub fn set_shape(&self, shape: Shape) {
        self.shared.lock().shape = shape;
    }

    /// Time between accepting a note and creating its outcome event (default
    /// 0.2 s; the real one takes tens of seconds). Read when a note is
    /// accepted: notes already accepted keep theirs.
    pub fn set_outcome_delay(&self, delay: Duration) {
        self.shared.lock().outcome_delay = delay;
    }

    /// The next `count` calls to `path` (`/v1/patient-notes` or
    /// `/v1/webhook-events`) answer `status` with Cobalt's error body
    /// `{"success":false,"message":...}`, before any credential check and
    /// without doing anything; a 429 carries `Retry-After: 1`. Successive
    /// calls queue up.
    pub fn fail_next(&self, path: &str, status: u16, count: usize) {
        StatusCode::from_u16(status).expect("a valid HTTP status");
        let mut inner = self.shared.lock();
        let queue = inner.failures.entry(path.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(status, count));
    }

    /// The next `count` calls to `/v1/webhook-events` (after any
    /// [`fail_next`](Self::fail_next) ones) answer 200 with a truncated JSON
    /// body, as a proxy cutting the answer short would.
    pub fn malformed_next(&self, count: usize) {
        self.shared.lock().malformed += count;
    }

    /// Calls to `path` wait `delay` before answering (`Duration::ZERO`: no
    /// stall). The work is done first: a note is accepted and its outcome
    /// scheduled even when the client gives up waiting for the answer, which
    /// is the case a client cannot tell from "never arrived".
    pub fn stall(&self, path: &str, delay: Duration) {
        let mut inner = self.shared.lock();
        if delay.is_zero() {
            inner.stalls.remove(path);
        } else {
            inner.stalls.insert(path.to_owned(), delay);
        }
    }

    /// Makes `access_token` valid too, for an account whose events carry
    /// `reference_id`: each account lists only its own events.
    pub fn add_account(&self, access_token: &str, reference_id: &str) {
        self.shared
            .lock()
            .accounts
            .insert(access_token.to_owned(), reference_id.to_owned());
    }

    /// Adds `event` (an envelope object) to the event list, as if Cobalt had
    /// created it and its delivery ended with `delivery_status` (`failed`:
    /// two attempts, the last a 503; `success`: one attempt, a 200; anything
    /// else, e.g. `pending`: no attempt). It is never delivered. Without an
    /// `access_token_reference_id` it belongs to [`REFERENCE_ID`]'s account;
    /// its `created`, when RFC 3339, is what dates and sorting use.
    pub fn add_event(&self, event: Value, delivery_status: &str) {
        assert!(event.is_object(), "an event envelope is a JSON object");
        let created = event["created"]
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
        let (attempts, code) = match delivery_status {
            "success" => (1, Some(200)),
            "failed" => (2, Some(503)),
            _ => (0, None),
        };
        let last_attempt = (attempts > 0).then(|| {
            event["created"]
                .as_str()
                .map_or_else(now_rfc3339, str::to_owned)
        });
        self.shared.lock().events.push(Record {
            envelope: event,
            created,
            status: delivery_status.to_owned(),
            attempts,
            last_attempt,
            response_code: code,
        });
    }

    /// Every event created so far, in creation order: the envelopes exactly
    /// as delivered (and as given to [`add_event`](Self::add_event)).
    pub fn events(&self) -> Vec<Value> {
        let inner = self.shared.lock();
        inner.events.iter().map(|r| r.envelope.clone()).collect()
    }

    /// The delivery status the event list shows for `event_id`: `pending`
    /// while being delivered, then `success` or `failed`.
    pub fn delivery_status(&self, event_id: &str) -> Option<String> {
        let inner = self.shared.lock();
        inner
            .events
            .iter()
            .find(|r| r.envelope["id"] == event_id)
            .map(|r| r.status.clone())
    }

    /// Notes accepted so far, in order: (job_id as a decimal string,
    /// patient_note_id). Job ids count from 10001 in each fake.
    pub fn jobs(&self) -> Vec<(String, String)> {
        self.shared.lock().jobs.clone()
    }

    /// Requests `path` got (any method, any answer, including refused and
    /// injected ones).
    pub fn calls(&self, path: &str) -> usize {
        self.shared.lock().calls.get(path).copied().unwrap_or(0)
    }

    /// The `traceparent` headers `path` received, in order.
    pub fn traceparents(&self, path: &str) -> Vec<String> {
        self.shared
            .lock()
            .traceparents
            .iter()
            .filter(|(called, _)| called == path)
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// Requests refused for wrong or missing credentials, on either path.
    pub fn unauthorized_calls(&self) -> usize {
        self.shared.lock().unauthorized
    }

    /// The query strings `GET /v1/webhook-events` received, in order (every
    /// call, including refused and injected ones; "" for none), as sent.
    pub fn event_queries(&self) -> Vec<String> {
        self.shared.lock().event_queries.clone()
    }

    /// (HTTP delivery attempts made, of them answered 2xx). Lost deliveries
    /// are never sent, so they count in neither: see [`losses`](Self::losses).
    pub fn deliveries(&self) -> (usize, usize) {
        let inner = self.shared.lock();
        (inner.attempts, inner.acknowledged)
    }

    /// (event id, how its delivery went) for every outcome event with a
    /// webhook URL to go to, in creation order; [`Loss::None`] for the ones
    /// actually sent.
    pub fn losses(&self) -> Vec<(String, Loss)> {
        self.shared.lock().losses.clone()
    }

    /// Where outcomes are delivered, if anywhere.
    pub fn webhook_url(&self) -> Option<String> {
        self.shared.webhook_url()
    }

    /// Where outcomes of notes accepted from now on are delivered (a
    /// receiver started after the fake, to be pointed at it).
    pub fn set_webhook_url(&self, url: Option<String>) {
        *self
            .shared
            .webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = url;
    }

    /// Waits (polling every 50 ms, up to `limit`) until every accepted note
    /// has its outcome event and every delivery has finished (acknowledged,
    /// retried, failed or lost). Panics when `limit` passes first, so that a
    /// test does not go on asserting on a half-finished state.
    pub async fn deliveries_settled(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending = self.shared.lock().pending;
            if pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{pending} outcome(s) still unsettled after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeCobalt {
    /// Stops listening, and stops creating and delivering outcomes: a test
    /// that drops the fake sees no late delivery from it.
    fn drop(&mut self) {
        self.server.abort();
        for task in self.shared.lock().tasks.drain(..) {
            task.abort();
        }
    }
}

/// Points a test server at `cobalt`, sweeping only on request.
pub fn point_at(cobalt: &FakeCobalt) -> impl Fn(&mut Config) + Clone + use<> {
    let url = cobalt.url.clone();
    move |config: &mut Config| {
        config.cobalt_api_url = url.clone();
        config.cobalt_client_id = Some(Secret::new(CLIENT_ID));
        config.cobalt_client_secret = Some(Secret::new(CLIENT_SECRET));
        config.cobalt_access_token = Some(Secret::new(ACCESS_TOKEN));
        config.cobalt_requests_per_sec = 200;
        config.cobalt_timeout_ms = 2_000;
        config.reconcile_interval_secs = 0;
    }
}
