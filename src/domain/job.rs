//! A job's final state, and the rule that makes it independent of the order
//! in which Cobalt's events arrive.
//!
//! Events for one job are ranked by a total order; the job's state is that
//! of its highest-ranked event. Since the maximum of a set does not depend on
//! the order its members are seen in, neither does the state.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobStatus {
    // Declared in ascending rank: `created` beats `failed`, because a note
    // that reached the EMR is there whatever else was reported.
    Failed,
    Created,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Created => "created",
        }
    }

    /// The change a job's taking this status is.
    pub fn change_kind(self) -> super::ChangeKind {
        match self {
            Self::Failed => super::ChangeKind::Failed,
            Self::Created => super::ChangeKind::Created,
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "created" => Ok(Self::Created),
            "failed" => Ok(Self::Failed),
            _ => Err(()),
        }
    }
}

/// Where an event stands among the events of its job: by status, then by
/// the event's `created` time, then by event id, so no two events tie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rank {
    pub status: JobStatus,
    pub created_at: OffsetDateTime,
    pub event_id: String,
}

impl Rank {
    /// The `created` instant as Unix nanoseconds, the form the store keeps.
    pub fn created_ns(&self) -> i64 {
        // `created` is range-checked when an event is parsed.
        crate::clock::unix_ns(self.created_at)
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.status, self.created_at, self.event_id.as_bytes()).cmp(&(
            other.status,
            other.created_at,
            other.event_id.as_bytes(),
        ))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Everything a `patient_note.created` or `patient_note.failed` event says
/// about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub patient_note_id: String,
    pub job_id: String,
    pub rank: Rank,
    /// The event's `created` as sent.
    pub created: String,
    pub emr_note_id: Option<String>,
    pub failure_reason: Option<String>,
    /// `data.reasons` as JSON text, when the event had it.
    pub reasons: Option<String>,
    pub patient_mrn: Option<String>,
    pub location_id: Option<String>,
    pub access_token_reference_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn rank(status: JobStatus, created_at: OffsetDateTime, event_id: &str) -> Rank {
        Rank {
            status,
            created_at,
            event_id: event_id.into(),
        }
    }

    #[test]
    fn created_beats_failed_whatever_the_times() {
        let created = rank(JobStatus::Created, datetime!(2025-01-01 00:00 UTC), "a");
        let failed = rank(JobStatus::Failed, datetime!(2026-01-01 00:00 UTC), "z");
        assert!(created > failed);
    }

    #[test]
    fn the_later_event_wins_and_ties_go_to_the_greater_id() {
        let early = rank(JobStatus::Failed, datetime!(2025-01-01 00:00 UTC), "b");
        let late = rank(JobStatus::Failed, datetime!(2025-01-01 00:00:01 UTC), "a");
        assert!(late > early);
        // The same instant written with another offset is a tie, settled by id.
        let tie = rank(JobStatus::Failed, datetime!(2025-01-01 01:00 +01:00), "c");
        assert!(tie > early);
    }
}
