//! The changes of a job's state that the change feed and the outgoing
//! webhooks carry.

use serde::Serialize;

/// What a change made of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Submitted: its outcome is now expected (pending).
    Registered,
    /// Its note is in the chart.
    Created,
    /// Its note could not be written.
    Failed,
    /// Still pending after `overdue_after_secs`.
    Overdue,
}

impl ChangeKind {
    pub const ALL: [Self; 4] = [Self::Registered, Self::Created, Self::Failed, Self::Overdue];

    /// The form kept in the database and shown in the feed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Created => "created",
            Self::Failed => "failed",
            Self::Overdue => "overdue",
        }
    }

    /// The kind `as_str` wrote.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// The `type` of an outgoing webhook carrying it.
    pub fn webhook_type(self) -> &'static str {
        match self {
            Self::Registered => "job.registered",
            Self::Created => "job.created",
            Self::Failed => "job.failed",
            Self::Overdue => "job.overdue",
        }
    }

    /// The kind a webhook `type` names.
    pub fn of_webhook_type(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.webhook_type() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::ChangeKind;

    #[test]
    fn each_kind_reads_back_from_both_of_its_forms() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(ChangeKind::of_webhook_type(kind.webhook_type()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("pending"), None);
        assert_eq!(ChangeKind::of_webhook_type("created"), None);
    }
}
