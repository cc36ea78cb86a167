//! The kinds of change to a job's state that the change feed records and
//! outgoing webhooks announce. Both the store and `outbound` name them, so
//! they live here, below both.

use std::fmt;
use std::str::FromStr;

/// A change of a job's state. Closed: a new kind is a decision the store's
/// column, the configuration's `types` and the clinic's app all see.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The job was registered and waits for its outcome.
    Registered,
    /// The note reached the EMR.
    Created,
    /// Cobalt reported that the note could not be created.
    Failed,
    /// No outcome arrived within `overdue_after_secs`.
    Overdue,
}

impl ChangeKind {
    /// Every kind, in the order of a job's life.
    pub const ALL: [Self; 4] = [Self::Registered, Self::Created, Self::Failed, Self::Overdue];

    /// The name the store keeps: `registered`, `created`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Created => "created",
            Self::Failed => "failed",
            Self::Overdue => "overdue",
        }
    }

    /// The webhook's `type`, as the clinic's app and the configuration's
    /// `types` name it: `job.registered`, `job.created`, ….
    pub fn webhook_type(self) -> &'static str {
        match self {
            Self::Registered => "job.registered",
            Self::Created => "job.created",
            Self::Failed => "job.failed",
            Self::Overdue => "job.overdue",
        }
    }

    /// The kind a webhook `type` names.
    pub fn from_webhook_type(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.webhook_type() == name)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads the store's form (`registered`), as [`ChangeKind::as_str`] writes it.
impl FromStr for ChangeKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_back_from_both_of_its_names() {
        for kind in ChangeKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
            assert_eq!(
                ChangeKind::from_webhook_type(kind.webhook_type()),
                Some(kind)
            );
            assert_eq!(kind.webhook_type(), format!("job.{kind}"));
        }
        assert_eq!("job.created".parse::<ChangeKind>(), Err(()));
        assert_eq!(ChangeKind::from_webhook_type("created"), None);
        assert_eq!(ChangeKind::from_webhook_type("job.deleted"), None);
    }
}
