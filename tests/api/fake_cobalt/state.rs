//! What the fake's handlers and delivery tasks share: its settings, what
//! tests injected, the notes and events it holds, and what it recorded of
//! every call and delivery for tests to read back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::task::AbortHandle;

use super::losses::LossPlan;
use super::{ACCESS_TOKEN, Loss, REFERENCE_ID, Shape};

const DEFAULT_OUTCOME_DELAY: Duration = Duration::from_millis(200);
const FIRST_JOB_ID: u64 = 10001;

/// What the handlers and the delivery tasks share.
pub(super) struct Shared {
    pub(super) webhook_url: Mutex<Option<String>>,
    pub(super) client: reqwest::Client,
    inner: Mutex<Inner>,
}

pub(super) struct Inner {
    /// access token -> access_token_reference_id.
    pub(super) accounts: HashMap<String, String>,
    pub(super) shape: Shape,
    pub(super) outcome_delay: Duration,
    pub(super) loss: Option<LossPlan>,
    /// path -> statuses of the next injected failures.
    pub(super) failures: HashMap<String, VecDeque<u16>>,
    pub(super) malformed: usize,
    pub(super) stalls: HashMap<String, Duration>,
    pub(super) events: Vec<Record>,
    pub(super) jobs: Vec<(String, String)>,
    pub(super) next_job_id: u64,
    pub(super) calls: HashMap<String, usize>,
    /// (path, `traceparent`) of each call that carried one.
    pub(super) traceparents: Vec<(String, String)>,
    pub(super) unauthorized: usize,
    pub(super) event_queries: Vec<String>,
    pub(super) attempts: usize,
    pub(super) acknowledged: usize,
    /// Accepted notes whose outcome is not created and delivered yet.
    pub(super) pending: usize,
    pub(super) losses: Vec<(String, Loss)>,
    pub(super) tasks: Vec<AbortHandle>,
}

impl Shared {
    /// A fake with one account ([`ACCESS_TOKEN`]), shape A, the default
    /// outcome delay and nothing injected or recorded yet.
    pub(super) fn new(webhook_url: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            // Cobalt posts to the registered URL; it does not follow redirects,
            // and a proxy from the environment must not see loopback traffic.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("an HTTP client");
        let mut accounts = HashMap::new();
        accounts.insert(ACCESS_TOKEN.to_owned(), REFERENCE_ID.to_owned());
        Self {
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
                traceparents: Vec::new(),
                unauthorized: 0,
                event_queries: Vec::new(),
                attempts: 0,
                acknowledged: 0,
                pending: 0,
                losses: Vec::new(),
                tasks: Vec::new(),
            }),
        }
    }

    pub(super) fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The state, even after a panicking test thread poisoned the lock: the
    /// fake must keep answering so the test reports its own failure.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An event as the list shows it.
pub(super) struct Record {
    pub(super) envelope: Value,
    pub(super) created: Option<OffsetDateTime>,
    pub(super) status: String,
    pub(super) attempts: u32,
    pub(super) last_attempt: Option<String>,
    pub(super) response_code: Option<u16>,
}

impl Record {
    pub(super) fn reference_id(&self) -> &str {
        self.envelope["access_token_reference_id"]
            .as_str()
            .unwrap_or(REFERENCE_ID)
    }

    /// Ids are opaque, and `job_id` may be a string or an integer.
    pub(super) fn job_id(&self) -> Option<String> {
        match &self.envelope["job_id"] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Marks one accepted note as settled when dropped.
pub(super) struct Pending(pub(super) Arc<Shared>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.lock().pending -= 1;
    }
}
