//! Durable storage: every SQL statement the service runs lives under this
//! module, behind the one interface the handlers use ([`Store`], its
//! operations declared once in `interface`), so an engine can be added
//! without touching them. Each engine is a submodule with its own
//! migrations (`migrations/<engine>/`), laid out alike: `mod.rs` opens it
//! and implements the interface; `writer` commits deliveries in batches;
//! `reader` answers status queries; `expected` keeps registrations,
//! idempotency keys and the sweep's lease; `audit` the audit trail;
//! `console` sessions and recovery runs. SQL the dialects share is in
//! `sql`.
//!
//! - `sqlite`: the embedded default, one file. Deliveries go to one
//!   writer thread that commits them in groups (one fsync a batch) and
//!   answers each only after the commit; status queries run on reader
//!   threads with read-only connections.
//! - `postgres`: one database shared by any number of replicas. Each
//!   replica's writer task commits groups of deliveries over its own
//!   connection; dedupe and ranking are decided inside the database, so
//!   replicas agree whatever lands where.
//!
//! The engine is chosen by the scheme of `database_url`.

pub mod console;
pub mod copy;
pub mod feed;
mod interface;
pub mod outbound;
mod postgres;
pub mod sealing;
mod sql;
mod sqlite;
pub mod wakeups;
pub mod write_health;
mod write_trace;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{Envelope, JobStatus};
use crate::payload_storage::PayloadStorage;
use crate::sealing::Keyring;
pub use console::{RecoveryRun, SessionRow, SessionStart};
pub use wakeups::Wakeups;
pub use write_health::WriteHealth;

/// The database engines, chosen by the scheme of `database_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine `database_url`'s scheme names, if any.
    pub fn of(database_url: &str) -> Option<Self> {
        if database_url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The engine of `database_url`, or why it names no database this
    /// service can use. The reason never repeats the URL (it may hold a
    /// password).
    pub fn check(database_url: &str) -> Result<Self, String> {
        match Self::of(database_url) {
            Some(Self::Sqlite) => sqlite::check_url(database_url).map(|()| Self::Sqlite),
            Some(Self::Postgres) => postgres::check_url(database_url).map(|()| Self::Postgres),
            None => Err(
                "must look like sqlite://path/to/file.db or postgres://user@host/database".into(),
            ),
        }
    }
}

/// The store the handlers use, whichever engine runs underneath.
#[derive(Clone)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

impl Store {
    /// Opens the database `options` name, applies its engine's migrations
    /// and starts the writer. Then checks that every key id the database
    /// holds sealed values under is configured ([`sealing::MissingKey`]
    /// when one is not) and records the key this process seals under.
    pub async fn open(options: &StoreOptions) -> anyhow::Result<Self> {
        let store = match Engine::check(&options.database_url)
            .map_err(|reason| anyhow::anyhow!("database_url {reason}"))?
        {
            Engine::Sqlite => Self::Sqlite(sqlite::Store::open(options).await?),
            Engine::Postgres => Self::Postgres(postgres::Store::open(options).await?),
        };
        if let Err(error) = sealing::check_and_announce(&store).await {
            store.close().await;
            return Err(error);
        }
        Ok(store)
    }
}

/// What became of a delivery, as kept in the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The event now decides its job's state.
    Applied,
    /// A valid outcome, outranked by the event that decides its job.
    Superseded,
    /// A type this service keeps but does not act on.
    Ignored,
    /// A patient-note event missing a field its state needs.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Superseded => "superseded",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }

    /// The outcome `as_str` wrote.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "applied" => Self::Applied,
            "superseded" => Self::Superseded,
            "ignored" => Self::Ignored,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }
}

/// How an event reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Delivered by Cobalt to the webhook route.
    Webhook,
    /// Fetched from Cobalt's event list by the recovery sweep.
    Recovered,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Recovered => "recovered",
        }
    }

    /// The source `as_str` wrote.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "webhook" => Some(Self::Webhook),
            "recovered" => Some(Self::Recovered),
            _ => None,
        }
    }
}

/// The answer to [`Store::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed now.
    New(Outcome),
    /// The event id was recorded before, with this outcome; nothing changed.
    Duplicate(Outcome),
}

/// A verified delivery, ready to be stored.
pub struct Delivery {
    pub envelope: Envelope,
    /// The body exactly as received (checked to be UTF-8).
    pub payload: String,
    pub attempt: Option<i64>,
    pub received_at: OffsetDateTime,
    pub source: Source,
}

/// A job a client submitted to Cobalt, whose outcome is now expected.
#[derive(Debug, Clone)]
pub struct Registration {
    pub job_id: String,
    pub patient_note_id: String,
    pub submitted_at: OffsetDateTime,
    /// The account it was submitted with, when known.
    pub access_token_reference_id: Option<String>,
    /// The name of the API token that registered it.
    pub registered_by: String,
}

impl Registration {
    pub(crate) fn submitted_ns(&self) -> i64 {
        crate::clock::unix_ns(self.submitted_at)
    }

    pub(crate) fn submitted_text(&self) -> String {
        crate::clock::rfc3339(self.submitted_at)
    }
}

/// The answer to [`Store::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Recorded now.
    New,
    /// The job was known already (registered, or its outcome recorded)
    /// with the same patient note; nothing changed.
    Known,
    /// The job id is known with another patient note; nothing changed.
    Conflict,
}

/// Pending jobs at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    pub pending: i64,
    pub overdue: i64,
    pub oldest_submitted_ns: Option<i64>,
}

impl PendingSummary {
    /// How long the oldest pending job has waited (zero with none).
    pub fn oldest_age(&self) -> Duration {
        self.oldest_submitted_ns.map_or(Duration::ZERO, |oldest| {
            let waited = crate::clock::now_ns().saturating_sub(oldest).max(0);
            Duration::from_nanos(waited.unsigned_abs())
        })
    }
}

/// A pending job, as the recovery sweep asks Cobalt about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedJob {
    pub job_id: String,
    pub access_token_reference_id: Option<String>,
}

/// What an idempotency key says about a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this request submits the note.
    Claimed,
    /// The first request with this key created this job.
    Done { job_id: String },
    /// The first request is still waiting for Cobalt.
    InFlight,
    /// The first request's fate at Cobalt is unknown (it timed out).
    Unknown,
    /// The key was used for a different request.
    Mismatch,
}

/// A claim on an idempotency key, for [`Store::begin_submission`].
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub key: String,
    /// The HMAC of the request, to tell a retry from another request.
    pub mac: String,
    pub now_ns: i64,
    /// Keys claimed before this are forgotten.
    pub expired_before_ns: i64,
    /// A claim still in flight from before this was cut off (its process
    /// stopped before Cobalt answered): its fate is unknown.
    pub stale_before_ns: i64,
}

impl Claim {
    /// What the row a key claimed says about its submission.
    pub(crate) fn of(
        claim: &KeyClaim,
        first_mac: &str,
        state: &str,
        job_id: Option<String>,
        claimed_ns: i64,
    ) -> Self {
        match (first_mac == claim.mac, state, job_id) {
            (false, _, _) => Self::Mismatch,
            (true, "done", Some(job_id)) => Self::Done { job_id },
            (true, "in_flight", _) if claimed_ns >= claim.stale_before_ns => Self::InFlight,
            _ => Self::Unknown,
        }
    }
}

/// How a submission ended, for [`Store::end_submission`].
#[derive(Debug, Clone)]
pub enum SubmissionEnd {
    Done(Registration),
    Unknown,
    Forget,
}

/// Opening failed because the database could not be reached at all (down,
/// or out of connection slots), not because of anything it said: a
/// server may wait for it instead of exiting.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the database {location}: {cause}")]
pub struct CannotReach {
    pub location: String,
    pub cause: String,
}

/// Whether opening failed with [`CannotReach`].
pub fn cannot_reach(error: &anyhow::Error) -> bool {
    error.downcast_ref::<CannotReach>().is_some()
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database did not commit within {0:?}")]
    Timeout(Duration),
    #[error("database error: {0}")]
    Database(String),
    #[error("the storage threads have stopped")]
    Stopped,
    #[error("too many deliveries are waiting for the database")]
    Overloaded,
    #[error("the database cannot be reached")]
    Unreachable,
    /// A sealed value that does not open (a missing key, or a value
    /// changed or moved): never answered with a guess.
    #[error(transparent)]
    Sealed(#[from] crate::sealing::OpenError),
}

impl StoreError {
    /// What went wrong in general words, fit for an answer to anyone
    /// (readiness): never the database's own text, which goes to the log.
    pub fn in_general(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "it did not commit in time",
            Self::Database(text) if is_full(text) => "it is full",
            Self::Database(_) => "it refused the write",
            Self::Stopped => "the storage has stopped",
            Self::Overloaded => "too many writes are waiting",
            Self::Unreachable => "it cannot be reached",
            Self::Sealed(_) => "a sealed value does not open",
        }
    }
}

/// A full database, in either engine's words: SQLite's `SQLITE_FULL` (also
/// past `max_database_bytes`), PostgreSQL's `disk_full` (53100) or a file
/// it could not extend.
fn is_full(text: &str) -> bool {
    [
        "database or disk is full",
        "53100",
        "could not extend file",
        "No space left",
    ]
    .iter()
    .any(|words| text.contains(words))
}

/// Queues a command for an engine's writer and waits until `deadline` for
/// the answer it sends back. A full queue means the writer is far behind:
/// waiting would only run into the sender's timeout, which it never
/// retries, so that is answered at once. Past the deadline a commit may
/// still land; the sender's retry then finds a duplicate, so a 503 here
/// never loses an event.
async fn hand_to_writer<C, T>(
    writes: &tokio::sync::mpsc::Sender<C>,
    command: C,
    answer: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
    deadline: tokio::time::Instant,
    write_timeout: Duration,
) -> Result<T, StoreError> {
    use tokio::sync::mpsc::error::TrySendError;
    match writes.try_send(command) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(StoreError::Overloaded),
        Err(TrySendError::Closed(_)) => return Err(StoreError::Stopped),
    }
    match tokio::time::timeout_at(deadline, answer).await {
        Err(_) => Err(StoreError::Timeout(write_timeout)),
        Ok(Err(_)) => Err(StoreError::Stopped),
        Ok(Ok(result)) => result,
    }
}

/// A registered job's first outcome, from a batch: counted in the
/// time-to-EMR figures once the batch has committed.
struct FirstOutcome {
    status: crate::domain::job::JobStatus,
    /// The account the job was registered under.
    account: Option<String>,
    submitted_ns: i64,
    /// The outcome event's time at Cobalt.
    outcome_ns: i64,
}

impl FirstOutcome {
    fn count(&self) {
        crate::monitoring::time_to_emr(
            self.status,
            self.account.as_deref(),
            self.submitted_ns,
            self.outcome_ns,
        );
    }
}

/// What every engine keeps alike, made at open.
#[derive(Clone)]
struct Common {
    /// The key pagination cursors are signed with, made once per database.
    cursor_key: [u8; 32],
    wakeups: Arc<Wakeups>,
    write_health: Arc<WriteHealth>,
    /// How long a write may wait for the queue, the lock and the commit.
    write_timeout: Duration,
    /// A pending job is overdue once it has waited this long.
    overdue_after: Duration,
    /// How much of a delivery's body is kept.
    payload_storage: PayloadStorage,
    /// The keys that seal patient data (none: kept unsealed).
    keyring: Keyring,
    /// Readers of the change feed waiting for it to move.
    feed: Arc<feed::FeedSignal>,
}

impl Common {
    /// Reads the cursor key a migration made.
    const READ_CURSOR_KEY: &str = "select key from cursor_key where id = 1";

    fn new(options: &StoreOptions, cursor_key: Vec<u8>) -> anyhow::Result<Self> {
        Ok(Self {
            cursor_key: cursor_key
                .try_into()
                .map_err(|_| anyhow::anyhow!("the cursor key is not 32 bytes"))?,
            wakeups: Wakeups::new(),
            write_health: Arc::new(WriteHealth::default()),
            write_timeout: options.write_timeout,
            overdue_after: options.overdue_after,
            payload_storage: options.payload_storage,
            keyring: options.keyring.clone(),
            feed: feed::FeedSignal::new(),
        })
    }

    /// A pending job submitted before this instant is overdue.
    fn overdue_before_ns(&self) -> i64 {
        crate::clock::ns_ago(self.overdue_after)
    }

    /// `jobs` with their sealed MRNs opened; a value that does not open
    /// fails the whole read (never shown as something else).
    fn opened(&self, mut jobs: Vec<JobState>) -> Result<Vec<JobState>, StoreError> {
        for job in &mut jobs {
            self.open_mrn(job)?;
        }
        Ok(jobs)
    }

    /// [`Common::opened`] of the changes' jobs.
    fn opened_changes(
        &self,
        mut changes: Vec<feed::Change>,
    ) -> Result<Vec<feed::Change>, StoreError> {
        for change in &mut changes {
            self.open_mrn(&mut change.job)?;
        }
        Ok(changes)
    }

    fn open_mrn(&self, job: &mut JobState) -> Result<(), StoreError> {
        {
            let Some(key_id) = job.mrn_sealed_under.take() else {
                return Ok(());
            };
            let Some(sealed) = job.patient_mrn.take() else {
                return Ok(());
            };
            let place = crate::sealing::Place::Mrn {
                patient_note_id: &job.patient_note_id,
                job_id: &job.job_id,
            };
            match self.keyring.open(place, Some(&key_id), sealed) {
                Ok(mrn) => job.patient_mrn = Some(mrn),
                Err(error) => {
                    tracing::error!(key_id = error.key_id(), job_id = %job.job_id, error = %error, "a sealed MRN does not open");
                    return Err(error.into());
                }
            }
        }
        Ok(())
    }
}

/// Events whose payloads one purge transaction passes at most.
const PAYLOAD_CHUNK: u64 = 500;
/// Audit rows one purge transaction deletes at most.
const AUDIT_CHUNK: u64 = 5_000;

/// How far one transaction of an upkeep sweep (purging payloads or audit
/// rows) got.
struct Chunk {
    /// Rows the transaction passed.
    passed: u64,
    /// Of those, rows it changed.
    changed: u64,
}

/// Runs `chunk`, one small transaction (so deliveries wait behind none of
/// them long), until one passes fewer than `size` rows. Returns the rows
/// changed.
async fn in_chunks<F, Fut>(size: u64, mut chunk: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Chunk, StoreError>>,
{
    let mut total = 0;
    loop {
        let done = chunk().await?;
        total += done.changed;
        if done.passed < size {
            return Ok(total);
        }
    }
}

/// Connection settings, from the configuration.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub database_url: String,
    pub read_pool_size: u32,
    /// How long a write may wait for the queue, the lock and the commit.
    pub write_timeout: Duration,
    /// Most deliveries committed in one transaction.
    pub write_batch_size: usize,
    /// Deliveries that may wait for the writer.
    pub write_queue_capacity: usize,
    /// SQLite page cache of each connection, in KiB.
    pub cache_kib: u32,
    /// Bytes of the file each connection may memory-map (0: none).
    pub mmap_bytes: u64,
    /// Refuse writes once the file would exceed this size (0: no limit).
    pub max_database_bytes: u64,
    /// A pending job is overdue once it has waited this long.
    pub overdue_after: Duration,
    /// How much of a delivery's body is kept.
    pub payload_storage: PayloadStorage,
    /// The keys that seal patient data (none: kept unsealed).
    pub keyring: Keyring,
}

impl StoreOptions {
    /// Where the data lives, for the start-up log. Never credentials.
    pub fn location(&self) -> String {
        match Engine::of(&self.database_url) {
            Some(Engine::Sqlite) => sqlite::location(&self.database_url),
            Some(Engine::Postgres) => postgres::location(&self.database_url),
            None => "an unusable database_url".into(),
        }
    }
}

/// Filters and position of one page of `list_jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// `None`: jobs with an outcome, of either status.
    pub status: Option<ListStatus>,
    /// Only jobs decided by an event created at or after this instant.
    pub since_ns: Option<i64>,
    /// Start after this job (the last one of the previous page).
    pub after: Option<JobKey>,
    pub limit: u32,
    pub narrow: Narrowing,
}

/// Further filters of a listing (the console's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Only failures with this `failure_reason`.
    pub failure_reason: Option<String>,
    pub location_id: Option<String>,
    pub access_token_reference_id: Option<String>,
    /// Only jobs decided (pending ones: submitted) before this instant.
    pub until_ns: Option<i64>,
}

/// Outcomes of one day.
#[derive(Debug, Clone, Default)]
pub struct DaySummary {
    pub created: i64,
    pub failed: i64,
    /// Failures by `failure_reason`, most frequent first.
    pub failures: Vec<FailureGroup>,
}

#[derive(Debug, Clone)]
pub struct FailureGroup {
    pub reason: Option<String>,
    pub count: i64,
    pub first_ns: i64,
    pub last_ns: i64,
}

/// An hour of [`HourOutcomes`], in nanoseconds.
pub const HOUR_NS: i64 = 3_600_000_000_000;

/// Outcomes decided in one hour of a span, the span's `hour`th (from 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourOutcomes {
    pub hour: i64,
    pub created: i64,
    pub failed: i64,
}

/// Adds one status's counts, `(hour, count)`, to `hours`, kept in hour
/// order (each engine counts the statuses over their own indexes).
fn add_hour_counts(
    hours: &mut Vec<HourOutcomes>,
    status: JobStatus,
    counts: impl IntoIterator<Item = (i64, i64)>,
) {
    for (hour, count) in counts {
        let at = match hours.binary_search_by_key(&hour, |h| h.hour) {
            Ok(at) => at,
            Err(at) => {
                hours.insert(
                    at,
                    HourOutcomes {
                        hour,
                        ..HourOutcomes::default()
                    },
                );
                at
            }
        };
        match status {
            JobStatus::Created => hours[at].created += count,
            JobStatus::Failed => hours[at].failed += count,
        }
    }
}

/// How long a registered job took from its submission to its note's
/// creation in the EMR (as Cobalt dated the event), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeToEmr {
    pub location_id: Option<String>,
    /// Outcome minus submission; negative when the clocks disagree.
    pub nanos: i64,
}

/// A delivery of an event already recorded: acknowledged, and changed
/// nothing.
#[derive(Debug, Clone)]
pub struct RepeatedDelivery {
    pub event_id: String,
    pub received_at: String,
    pub attempt: Option<i64>,
}

/// The newest delivery received from Cobalt.
#[derive(Debug, Clone)]
pub struct LastDelivery {
    pub received_at: String,
    pub event_type: Option<String>,
}

/// A row to append to the audit trail. Ids and filters only: never patient
/// data.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    /// The API token's name.
    pub actor: String,
    /// What was done, as `area.verb` (`console.job.view`, `api.job.read`, ...).
    pub action: String,
    /// What it was done to: an id, or a listing's filter.
    pub target: String,
    pub request_id: Option<String>,
}

/// A recorded row of the audit trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Increases in the order rows were recorded; `before` of the next page.
    pub id: i64,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
}

/// Filters and position of a page of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Rows recorded before this one.
    pub before_id: Option<i64>,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: u32,
}

/// What a listing selects by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStatus {
    Decided(JobStatus),
    /// Jobs without an outcome; with `overdue_only`, only those past
    /// `overdue_after` at the time of the read.
    Pending {
        overdue_only: bool,
    },
}

/// The sort key of a job in listings: newest decision first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobKey {
    /// The deciding event's `created`, or a pending job's submission time.
    pub created_ns: i64,
    pub patient_note_id: String,
    pub job_id: String,
}

/// A job's state as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobState {
    pub patient_note_id: String,
    pub job_id: String,
    /// `created`, `failed`, or `pending` (submitted, no outcome yet).
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// Pending for longer than `overdue_after_secs`.
    pub overdue: bool,
    /// When the job was submitted to Cobalt, if it was registered (RFC 3339).
    #[schema(format = DateTime)]
    pub submitted_at: Option<String>,
    pub emr_note_id: Option<String>,
    pub failure_reason: Option<String>,
    /// `data.reasons` of the deciding failure, as sent: `[{"code", "description"}]`.
    #[schema(value_type = Option<Vec<Reason>>)]
    pub reasons: Option<serde_json::Value>,
    pub patient_mrn: Option<String>,
    pub location_id: Option<String>,
    pub access_token_reference_id: Option<String>,
    pub deciding_event_id: Option<String>,
    /// The deciding event's `created` (RFC 3339).
    #[schema(format = DateTime)]
    pub deciding_event_created: Option<String>,
    /// When the first event of this job arrived (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub first_received_at: Option<String>,
    /// When the latest event of this job arrived (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub last_received_at: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub key: JobKey,
    /// While read from the database and not yet opened: the key id
    /// `patient_mrn` is sealed under. The store opens it before answering.
    #[serde(skip)]
    #[schema(ignore)]
    pub(crate) mrn_sealed_under: Option<String>,
}

impl JobState {
    pub const PENDING: &'static str = "pending";
}

/// A job's status: `created` or `failed` (its outcome), or `pending`
/// (expected, no outcome yet). Documentation only: [`JobState::status`]
/// holds the text.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum JobStatusName {
    Created,
    Failed,
    Pending,
}

/// One of a failure's `data.reasons`, as Cobalt sent it. Documentation
/// only: the service keeps and returns the array unchanged, so other
/// fields pass through (the schema allows them).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Reason {
    /// A machine-readable reason.
    #[schema(example = "invalid_patient_mrn")]
    code: Option<String>,
    /// The reason in words.
    #[schema(example = "No patient with this MRN at this location")]
    description: Option<String>,
}

/// An entry of the event log, without its payload (patient data).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub job_id: Option<String>,
    pub patient_note_id: Option<String>,
    /// The event's `created`, as sent (RFC 3339).
    #[schema(format = DateTime)]
    pub created: Option<String>,
    /// When this service received it (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub received_at: String,
    pub attempt: Option<i64>,
    pub source: Source,
    pub outcome: Outcome,
    pub reject_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_says_what_became_of_the_first_request() {
        let claim = KeyClaim {
            key: "k".into(),
            mac: "m".into(),
            now_ns: 100,
            expired_before_ns: 0,
            stale_before_ns: 50,
        };
        let done = Claim::of(&claim, "m", "done", Some("42".into()), 60);
        assert_eq!(
            done,
            Claim::Done {
                job_id: "42".into()
            }
        );
        assert_eq!(
            Claim::of(&claim, "other", "done", Some("42".into()), 60),
            Claim::Mismatch
        );
        assert_eq!(
            Claim::of(&claim, "m", "in_flight", None, 60),
            Claim::InFlight
        );
        // In flight since before the stale mark: its process stopped.
        assert_eq!(
            Claim::of(&claim, "m", "in_flight", None, 40),
            Claim::Unknown
        );
        assert_eq!(Claim::of(&claim, "m", "unknown", None, 60), Claim::Unknown);
    }
}
