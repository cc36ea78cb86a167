//! Durable storage: every SQL statement the service runs lives under this
//! module, behind the one interface the handlers use ([`Store`]), so an
//! engine can be added without touching them. Each engine is a submodule
//! with its own migrations (`migrations/<engine>/`).
//!
//! - `sqlite`: the embedded default, one file. Deliveries go to one
//!   writer thread that commits them in groups (one fsync a batch) and
//!   answers each only after the commit; status queries run on reader
//!   threads with read-only connections.

mod sqlite;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{Envelope, JobStatus};

pub use sqlite::Store;

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
}

impl StoreOptions {
    /// Where the data lives, for the start-up log. Never credentials.
    pub fn location(&self) -> String {
        sqlite::location(&self.database_url)
    }
}

/// Filters and position of one page of `list_jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    /// Only jobs decided by an event created at or after this instant.
    pub since_ns: Option<i64>,
    /// Start after this job (the last one of the previous page).
    pub after: Option<JobKey>,
    pub limit: u32,
}

/// The sort key of a job in listings: newest decision first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobKey {
    pub created_ns: i64,
    pub patient_note_id: String,
    pub job_id: String,
}

/// A job's state as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobState {
    pub patient_note_id: String,
    pub job_id: String,
    pub status: String,
    pub emr_note_id: Option<String>,
    pub failure_reason: Option<String>,
    /// `data.reasons` of the deciding failure, as sent: `[{"code", "description"}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub reasons: Option<serde_json::Value>,
    pub patient_mrn: Option<String>,
    pub location_id: Option<String>,
    pub access_token_reference_id: Option<String>,
    pub deciding_event_id: String,
    pub deciding_event_created: String,
    pub first_received_at: String,
    pub last_received_at: String,
    #[serde(skip)]
    #[schema(ignore)]
    pub key: JobKey,
}

/// An entry of the event log, without its payload (patient data).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub job_id: Option<String>,
    pub patient_note_id: Option<String>,
    pub created: Option<String>,
    pub received_at: String,
    pub attempt: Option<i64>,
    pub outcome: Outcome,
    pub reject_reason: Option<String>,
}
