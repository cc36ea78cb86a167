//! A fake Cobalt: a real HTTP server on a loopback port, for end-to-end
//! tests of everything that talks to Cobalt (submitting notes, receiving
//! their outcome webhooks, recovering missed ones from the event list).
//!
//! It follows `/work/shared/cobalt/API.md` and `WEBHOOKS.md`: the two calls
//! `POST /v1/patient-notes` and `GET /v1/webhook-events` with their
//! credential headers, both documented response shapes of the event list,
//! and the documented delivery policy (5 s timeout, one retry 1 s later on a
//! 5xx, a 429 or a network error, with a 2 s timeout). On top of that, tests
//! can inject what a real Cobalt does on a bad day: lost deliveries, error
//! answers, malformed answers and slow answers.
//!
//! Everything it decides is deterministic (the losses come from a seeded
//! xorshift), so a failing test can be rerun and fail the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio::task::{AbortHandle, JoinHandle};

use crate::helpers;

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

const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_DELAY: Duration = Duration::from_secs(1);
const RETRY_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_OUTCOME_DELAY: Duration = Duration::from_millis(200);
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;
const FIRST_JOB_ID: u64 = 10001;

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

/// The modes lost deliveries cycle through, in order.
const LOSS_CYCLE: [Loss; 3] = [
    Loss::NoAnswer,
    Loss::Timeout,
    Loss::ServerErrorThenLostRetry,
];

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
        let client = reqwest::Client::builder()
            // Cobalt posts to the registered URL; it does not follow redirects,
            // and a proxy from the environment must not see loopback traffic.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("an HTTP client");
        let mut accounts = HashMap::new();
        accounts.insert(ACCESS_TOKEN.to_owned(), REFERENCE_ID.to_owned());
        let shared = Arc::new(Shared {
            webhook_url: Mutex::new(webhook_url),
            client,
            inner: Mutex::new(Inner {
                accounts,
                shape: Shape::A,
                outcome_delay: DEFAULT_OUTCOME_DELAY,
                loss: None,
                failures: HashMap::new(),
                malformed: 0,
                stalls: HashMap::new(),
                events: Vec::new(),
                jobs: Vec::new(),
                next_job_id: FIRST_JOB_ID,
                calls: HashMap::new(),
                unauthorized: 0,
                event_queries: Vec::new(),
                attempts: 0,
                acknowledged: 0,
                pending: 0,
                losses: Vec::new(),
                tasks: Vec::new(),
            }),
        });
        let router = Router::new()
            .route(NOTES_PATH, post(create_note))
            .route(EVENTS_PATH, get(list_events))
            .fallback(not_found)
            .with_state(shared.clone());
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
        self.shared.lock().loss = Some(LossPlan {
            share,
            rng: XorShift::new(seed),
            lost: 0,
        });
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

/// What the handlers and the delivery tasks share.
struct Shared {
    webhook_url: Mutex<Option<String>>,
    client: reqwest::Client,
    inner: Mutex<Inner>,
}

struct Inner {
    /// access token -> access_token_reference_id.
    accounts: HashMap<String, String>,
    shape: Shape,
    outcome_delay: Duration,
    loss: Option<LossPlan>,
    /// path -> statuses of the next injected failures.
    failures: HashMap<String, VecDeque<u16>>,
    malformed: usize,
    stalls: HashMap<String, Duration>,
    events: Vec<Record>,
    jobs: Vec<(String, String)>,
    next_job_id: u64,
    calls: HashMap<String, usize>,
    unauthorized: usize,
    event_queries: Vec<String>,
    attempts: usize,
    acknowledged: usize,
    /// Accepted notes whose outcome is not created and delivered yet.
    pending: usize,
    losses: Vec<(String, Loss)>,
    tasks: Vec<AbortHandle>,
}

/// An event as the list shows it.
struct Record {
    envelope: Value,
    created: Option<OffsetDateTime>,
    status: String,
    attempts: u32,
    last_attempt: Option<String>,
    response_code: Option<u16>,
}

impl Record {
    fn reference_id(&self) -> &str {
        self.envelope["access_token_reference_id"]
            .as_str()
            .unwrap_or(REFERENCE_ID)
    }

    /// Ids are opaque, and `job_id` may be a string or an integer.
    fn job_id(&self) -> Option<String> {
        match &self.envelope["job_id"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

struct LossPlan {
    share: f64,
    rng: XorShift,
    /// Deliveries lost so far: picks the next mode of [`LOSS_CYCLE`].
    lost: usize,
}

impl LossPlan {
    /// Whether the next delivery is lost, and how.
    fn draw(&mut self) -> Loss {
        if self.rng.next_f64() >= self.share {
            return Loss::None;
        }
        self.lost += 1;
        LOSS_CYCLE[(self.lost - 1) % LOSS_CYCLE.len()]
    }
}

/// xorshift64: tiny, deterministic, and good enough to pick lost deliveries.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // The state must not be zero; splitmix spreads small seeds.
        Self(splitmix(seed) | 1)
    }

    /// Uniform in 0.0..1.0.
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number never returned before in this process, and a salt unlikely to
/// repeat in another: ids stay unique across fakes and test processes
/// (nextest runs each test in a process of its own).
fn unique() -> (u64, u64) {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static SALT: OnceLock<u64> = OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        splitmix(nanos ^ u64::from(std::process::id()))
    });
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    (n, splitmix(salt ^ n))
}

/// 24 lowercase hex characters, as Cobalt's `patient_note_id`.
fn new_note_id() -> String {
    let (n, mixed) = unique();
    format!("{mixed:016x}{:08x}", n as u32)
}

fn new_event_id() -> String {
    let (n, mixed) = unique();
    format!("evt_{mixed:016x}{:08x}", n as u32)
}

/// A UUID-like `emr_note_id`.
fn new_emr_note_id() -> String {
    let (n, mixed) = unique();
    let low = splitmix(mixed ^ n);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        mixed & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// Now, as Cobalt writes times: RFC 3339 in UTC with milliseconds.
fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("a formattable time")
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "success": false, "message": message })),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Invalid credentials")
}

/// Answers after the stall of the path, if any.
async fn answer_after(stall: Option<Duration>, response: Response) -> Response {
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    response
}

async fn create_note(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (stall, response) = shared.accept_note(&headers, &body);
    answer_after(stall, response).await
}

async fn list_events(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    let (stall, response) = shared.list(&headers, &uri);
    answer_after(stall, response).await
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    *shared
        .lock()
        .calls
        .entry(uri.path().to_owned())
        .or_default() += 1;
    error(StatusCode::NOT_FOUND, "Not found")
}

/// A note accepted by `POST /v1/patient-notes`, waiting for its outcome.
struct Note {
    job_id: String,
    patient_note_id: String,
    reference_id: String,
    fields: Map<String, Value>,
}

/// How one delivery attempt ended.
enum Attempt {
    Answered(StatusCode),
    TimedOut,
    NetworkError,
}

impl Shared {
    fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The state, even after a panicking test thread poisoned the lock: the
    /// fake must keep answering so the test reports its own failure.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call; answers an injected failure if one is due.
    fn arrive(inner: &mut Inner, path: &str) -> (Option<Duration>, Option<Response>) {
        *inner.calls.entry(path.to_owned()).or_default() += 1;
        let stall = inner.stalls.get(path).copied();
        let failure = inner
            .failures
            .get_mut(path)
            .and_then(VecDeque::pop_front)
            .map(|status| {
                let status = StatusCode::from_u16(status).unwrap();
                let message = status.canonical_reason().unwrap_or("Injected failure");
                error(status, message)
            });
        (stall, failure)
    }

    /// The account's reference id when all three credentials are right.
    fn authenticate(inner: &mut Inner, headers: &HeaderMap) -> Option<String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let reference = (header("client_id") == Some(CLIENT_ID)
            && header("client_secret") == Some(CLIENT_SECRET))
        .then(|| header("access_token").and_then(|token| inner.accounts.get(token)))
        .flatten()
        .cloned();
        if reference.is_none() {
            inner.unauthorized += 1;
        }
        reference
    }

    fn accept_note(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Option<Duration>, Response) {
        let mut inner = self.lock();
        let (stall, failure) = Self::arrive(&mut inner, NOTES_PATH);
        if let Some(failure) = failure {
            return (stall, failure);
        }
        let Some(reference_id) = Self::authenticate(&mut inner, headers) else {
            return (stall, unauthorized());
        };
        let fields = match validate_note(body) {
            Ok(fields) => fields,
            Err(message) => return (stall, error(StatusCode::BAD_REQUEST, &message)),
        };
        let job_id = inner.next_job_id;
        inner.next_job_id += 1;
        let note = Note {
            job_id: job_id.to_string(),
            patient_note_id: new_note_id(),
            reference_id,
            fields,
        };
        inner
            .jobs
            .push((note.job_id.clone(), note.patient_note_id.clone()));
        // Decided now, in the order notes are accepted, so that the seeded
        // losses do not depend on the timing of the outcome tasks.
        let loss = match (self.webhook_url(), inner.loss.as_mut()) {
            (Some(_), Some(plan)) => plan.draw(),
            _ => Loss::None,
        };
        let response = Json(json!({
            "success": true,
            "message": "Patient note processing. A webhook event will be sent upon completion.",
            "patient_note_id": note.patient_note_id,
            "job_id": job_id,
        }))
        .into_response();
        inner.pending += 1;
        let delay = inner.outcome_delay;
        let task = tokio::spawn(self.clone().produce_outcome(note, loss, delay));
        inner.tasks.push(task.abort_handle());
        (stall, response)
    }

    /// Creates the outcome event of `note` after `delay`, records it, then
    /// delivers it unless it is lost.
    async fn produce_outcome(self: Arc<Self>, note: Note, loss: Loss, delay: Duration) {
        // Settled even if the task is aborted or panics.
        let _pending = Pending(self.clone());
        tokio::time::sleep(delay).await;
        let mrn = note.fields["patient_mrn"].as_str().unwrap_or_default();
        let (event_type, data) = if mrn.ends_with("-F") {
            (
                "patient_note.failed",
                json!({ "patient_note_id": note.patient_note_id, "failure_reason": FAILURE_REASON }),
            )
        } else {
            (
                "patient_note.created",
                json!({
                    "patient_note_id": note.patient_note_id,
                    "emr_note_id": new_emr_note_id(),
                    "patient_mrn": note.fields["patient_mrn"],
                    "location_id": note.fields["location_id"],
                    "subject": note.fields["subject"],
                    "note": note.fields["note"],
                }),
            )
        };
        let created = now_rfc3339();
        let id = new_event_id();
        let envelope = json!({
            "id": id,
            "access_token_reference_id": note.reference_id,
            "object": "event",
            "created": created,
            "type": event_type,
            "job_id": note.job_id,
            "data": data,
        });
        let body = serde_json::to_string(&envelope).unwrap();
        let webhook_url = self.webhook_url();
        let (status, attempts, last_attempt, response_code) = match (&webhook_url, loss) {
            (None, _) | (Some(_), Loss::NoAnswer) => ("failed", 0, None, None),
            (Some(_), Loss::Timeout) => ("failed", 1, Some(created.clone()), None),
            (Some(_), Loss::ServerErrorThenLostRetry) => {
                ("failed", 2, Some(created.clone()), Some(503))
            }
            (Some(_), Loss::None) => ("pending", 0, None, None),
        };
        let index = {
            let mut inner = self.lock();
            if webhook_url.is_some() {
                inner.losses.push((id.clone(), loss));
            }
            inner.events.push(Record {
                envelope,
                created: OffsetDateTime::parse(&created, &Rfc3339).ok(),
                status: status.to_owned(),
                attempts,
                last_attempt,
                response_code,
            });
            inner.events.len() - 1
        };
        if let (Some(url), Loss::None) = (&webhook_url, loss) {
            self.deliver(url, index, &body, &id, &created).await;
        }
    }

    /// Cobalt's documented policy: one attempt with a 5 s timeout; one retry
    /// 1 s later with a 2 s timeout after a 5xx, a 429 or a network error;
    /// none after a timeout or another 4xx.
    async fn deliver(&self, url: &str, index: usize, body: &str, id: &str, created: &str) {
        let first = self
            .attempt(url, index, body, id, created, 1, FIRST_ATTEMPT_TIMEOUT)
            .await;
        let retry = match first {
            Attempt::Answered(status) => {
                status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
            }
            Attempt::TimedOut => false,
            Attempt::NetworkError => true,
        };
        let last = if retry {
            tokio::time::sleep(RETRY_DELAY).await;
            self.attempt(url, index, body, id, created, 2, RETRY_TIMEOUT)
                .await
        } else {
            first
        };
        let delivered = matches!(last, Attempt::Answered(status) if status.is_success());
        self.lock().events[index].status = if delivered { "success" } else { "failed" }.to_owned();
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        url: &str,
        index: usize,
        body: &str,
        id: &str,
        created: &str,
        number: u32,
        timeout: Duration,
    ) -> Attempt {
        let sent = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("cobalt-verification", helpers::sign(body.as_bytes()))
            .header("webhook-id", id)
            .header("webhook-timestamp", created)
            .header("webhook-attempt", number.to_string())
            .body(body.to_owned())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => Attempt::Answered(response.status()),
            Err(e) if e.is_timeout() => Attempt::TimedOut,
            Err(_) => Attempt::NetworkError,
        };
        let mut inner = self.lock();
        inner.attempts += 1;
        let code = match outcome {
            Attempt::Answered(status) => {
                if status.is_success() {
                    inner.acknowledged += 1;
                }
                Some(status.as_u16())
            }
            _ => None,
        };
        let record = &mut inner.events[index];
        record.attempts += 1;
        record.last_attempt = Some(now_rfc3339());
        record.response_code = code;
        outcome
    }

    fn list(&self, headers: &HeaderMap, uri: &Uri) -> (Option<Duration>, Response) {
        let mut inner = self.lock();
        inner
            .event_queries
            .push(uri.query().unwrap_or_default().to_owned());
        let (stall, failure) = Self::arrive(&mut inner, EVENTS_PATH);
        if let Some(failure) = failure {
            return (stall, failure);
        }
        if inner.malformed > 0 {
            inner.malformed -= 1;
            let truncated = (
                [("content-type", "application/json")],
                r#"{"success":true,"webhook_events":"oops""#,
            );
            return (stall, truncated.into_response());
        }
        let Some(reference_id) = Self::authenticate(&mut inner, headers) else {
            return (stall, unauthorized());
        };
        let query = match ListQuery::parse(uri) {
            Ok(query) => query,
            Err(message) => return (stall, error(StatusCode::BAD_REQUEST, &message)),
        };
        let mut selected: Vec<(usize, &Record)> = inner
            .events
            .iter()
            .enumerate()
            .filter(|(_, r)| r.reference_id() == reference_id && query.matches(r))
            .collect();
        // Creation time, then creation order for equal (or unreadable) times.
        selected.sort_by_key(|&(i, r)| (r.created.unwrap_or(OffsetDateTime::UNIX_EPOCH), i));
        if !query.ascending {
            selected.reverse();
        }
        let webhook_url = self.webhook_url();
        let primary_url = webhook_url.as_deref().unwrap_or(DEFAULT_WEBHOOK_URL);
        let rows: Vec<Value> = match inner.shape {
            Shape::A => selected.iter().map(|(_, r)| shape_a(r)).collect(),
            Shape::B => selected
                .iter()
                .flat_map(|(_, r)| [shape_b(r, primary_url), shape_b(r, STAGING_WEBHOOK_URL)])
                .collect(),
        };
        let total_count = rows.len();
        // An empty list still has one (empty) page: current_page 1,
        // total_pages 1, so "page < total_pages" loops end at once.
        let total_pages = total_count.div_ceil(query.page_size).max(1);
        let page: Vec<Value> = rows
            .into_iter()
            .skip((query.page - 1).saturating_mul(query.page_size))
            .take(query.page_size)
            .collect();
        let body = json!({
            "success": true,
            "webhook_events": page,
            "pagination": {
                "current_page": query.page,
                "total_pages": total_pages,
                "total_count": total_count,
                "page_size": query.page_size,
            },
        });
        (stall, Json(body).into_response())
    }
}

/// Marks one accepted note as settled when dropped.
struct Pending(Arc<Shared>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.lock().pending -= 1;
    }
}

/// The note's fields, or Cobalt's message for the first one wrong.
fn validate_note(body: &[u8]) -> Result<Map<String, Value>, String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err("Request body must be a JSON object".to_owned());
    };
    for name in ["note", "subject", "patient_mrn", "location_id"] {
        match fields.get(name).and_then(Value::as_str) {
            Some(value) if !value.is_empty() => {}
            _ => return Err(format!("Missing required field: {name}")),
        }
    }
    if !LOCATIONS.contains(&fields["location_id"].as_str().unwrap()) {
        return Err(format!(
            "Invalid location_id. Must be one of: {}",
            LOCATIONS.join(", ")
        ));
    }
    Ok(fields)
}

fn shape_a(record: &Record) -> Value {
    let mut row = record.envelope.as_object().cloned().unwrap_or_default();
    row.insert("status".into(), json!(record.status));
    row.insert("delivered".into(), json!(record.status == "success"));
    row.insert("delivery_attempts".into(), json!(record.attempts));
    row.insert("last_delivery_attempt".into(), json!(record.last_attempt));
    row.insert("response_status_code".into(), json!(record.response_code));
    Value::Object(row)
}

fn shape_b(record: &Record, webhook_url: &str) -> Value {
    let envelope = &record.envelope;
    json!({
        "event_id": envelope["id"],
        "event_type": envelope["type"],
        "webhook_url": webhook_url,
        "delivery_status": record.status,
        "data": envelope["data"],
        "created_at": envelope["created"],
        "job_id": envelope["job_id"],
        "access_token_reference_id": record.reference_id(),
    })
}

/// The query of `GET /v1/webhook-events`. Empty values count as absent;
/// unknown parameters are ignored; for a repeated one the first wins.
struct ListQuery {
    job_id: Option<String>,
    event_type: Option<String>,
    delivery_status: Option<String>,
    start_date: Option<Date>,
    end_date: Option<Date>,
    page: usize,
    page_size: usize,
    ascending: bool,
}

impl ListQuery {
    fn parse(uri: &Uri) -> Result<Self, String> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|_| "Invalid query string".to_owned())?;
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, value)| key == name && !value.is_empty())
                .map(|(_, value)| value.as_str())
        };
        let date = |name: &str| {
            value(name)
                .map(|text| {
                    Date::parse(text, format_description!("[year]-[month]-[day]"))
                        .map_err(|_| format!("Invalid {name}. Expected YYYY-MM-DD"))
                })
                .transpose()
        };
        let number = |name: &str, default: usize| match value(name) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!("Invalid {name}. Must be a positive integer")),
            },
        };
        let delivery_status = value("delivery_status").or_else(|| value("status"));
        if let Some(status) = delivery_status {
            if !["success", "failed", "pending"].contains(&status) {
                return Err(
                    "Invalid delivery_status. Must be one of: success, failed, pending".to_owned(),
                );
            }
        }
        let page_size = number("page_size", DEFAULT_PAGE_SIZE)?;
        if page_size > MAX_PAGE_SIZE {
            return Err(format!("page_size must be at most {MAX_PAGE_SIZE}"));
        }
        let ascending = match value("sort") {
            None | Some("-created_at") => false,
            Some("created_at") => true,
            Some(_) => {
                return Err("Invalid sort. Must be one of: created_at, -created_at".to_owned());
            }
        };
        Ok(Self {
            job_id: value("job_id").map(str::to_owned),
            event_type: value("event_type").map(str::to_owned),
            delivery_status: delivery_status.map(str::to_owned),
            start_date: date("start_date")?,
            end_date: date("end_date")?,
            page: number("page", 1)?,
            page_size,
            ascending,
        })
    }

    fn matches(&self, record: &Record) -> bool {
        let date = record.created.map(|t| t.to_offset(UtcOffset::UTC).date());
        self.job_id
            .as_ref()
            .is_none_or(|wanted| record.job_id().as_ref() == Some(wanted))
            && self
                .event_type
                .as_ref()
                .is_none_or(|wanted| record.envelope["type"] == wanted.as_str())
            && self
                .delivery_status
                .as_ref()
                .is_none_or(|wanted| &record.status == wanted)
            && self
                .start_date
                .is_none_or(|start| date.is_some_and(|d| d >= start))
            && self
                .end_date
                .is_none_or(|end| date.is_some_and(|d| d <= end))
    }
}

#[cfg(test)]
mod tests {
    //! The fake itself: if it drifts from the documented Cobalt, every test
    //! built on it proves less.

    use std::time::Instant;

    use super::*;

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
}
