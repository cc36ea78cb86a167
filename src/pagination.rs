//! Pagination cursors: opaque to clients, and valid only as issued.
//!
//! A cursor is the sort key of a page's last item, with an HMAC-SHA256 tag
//! over that key and the listing's filters, under a key kept in the
//! database. So a cursor made or altered by hand, or taken to a listing
//! with other filters, is refused; one issued by any process serving the
//! same database, before or after a restart, is accepted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::{JobKey, Narrowing};

/// Bytes of the tag a cursor carries (128 bits).
const TAG_LEN: usize = 16;

/// The filters a cursor is bound to: the listing's, except the page size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub status: Option<StatusFilter>,
    /// Only pending jobs past their overdue time.
    pub overdue: bool,
    pub since_ns: Option<i64>,
    /// The console's further filters.
    pub narrow: Narrowing,
}

/// The states a listing can be filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum StatusFilter {
    Created,
    Failed,
    Pending,
}

impl StatusFilter {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Self::Created),
            "failed" => Some(Self::Failed),
            "pending" => Some(Self::Pending),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Failed => "failed",
            Self::Pending => "pending",
        }
    }
}

/// Issues and checks cursors under one key.
#[derive(Clone)]
pub struct Cursors {
    key: [u8; 32],
}

impl Cursors {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The cursor that continues after `last` in the listing `filters` selects.
    pub fn issue(&self, filters: &Filters, last: &JobKey) -> String {
        let position = serde_json::to_vec(last).expect("a key always serializes");
        let tag = self.mac(filters, &position).finalize().into_bytes();
        format!(
            "{}.{}",
            hex::encode(&position),
            hex::encode(&tag[..TAG_LEN])
        )
    }

    /// The position `cursor` holds, if this key issued it for `filters`.
    pub fn open(&self, filters: &Filters, cursor: &str) -> Option<JobKey> {
        let (position, tag) = cursor.split_once('.')?;
        let position = hex::decode(position).ok()?;
        let tag = hex::decode(tag).ok().filter(|tag| tag.len() == TAG_LEN)?;
        // Constant-time comparison of the truncated tag.
        self.mac(filters, &position)
            .verify_truncated_left(&tag)
            .ok()?;
        serde_json::from_slice(&position).ok()
    }

    fn mac(&self, filters: &Filters, position: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        // `overdue` joins the status, so cursors issued before it existed
        // stay valid.
        let status = match (filters.status, filters.overdue) {
            (Some(status), false) => status.as_str(),
            (_, true) => "pending overdue",
            (None, false) => "",
        };
        let since = filters
            .since_ns
            .map(|ns| ns.to_string())
            .unwrap_or_default();
        // Each part ends in a byte none of them can hold, so no two
        // different listings feed the MAC the same bytes.
        for part in [b"cursor v1".as_slice(), status.as_bytes(), since.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        // The console's filters, each named, and only when set: so the
        // API's cursors read as they always have.
        let narrow = &filters.narrow;
        let until = narrow.until_ns.map(|ns| ns.to_string());
        for (name, value) in [
            ("reason", narrow.failure_reason.as_deref()),
            ("location", narrow.location_id.as_deref()),
            ("account", narrow.access_token_reference_id.as_deref()),
            ("until", until.as_deref()),
        ] {
            if let Some(value) = value {
                mac.update(name.as_bytes());
                mac.update(&[0]);
                // The length first: a value may hold any byte.
                mac.update(&(value.len() as u64).to_be_bytes());
                mac.update(value.as_bytes());
            }
        }
        mac.update(position);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> JobKey {
        JobKey {
            created_ns: 1_760_000_000_000_000_000,
            patient_note_id: "pn_1".into(),
            job_id: "42".into(),
        }
    }

    fn failed() -> Filters {
        Filters {
            status: Some(StatusFilter::Failed),
            ..Filters::default()
        }
    }

    #[test]
    fn a_cursor_opens_only_for_the_filters_and_key_it_was_issued_for() {
        let cursors = Cursors::new([7; 32]);
        let cursor = cursors.issue(&failed(), &key());
        assert_eq!(cursors.open(&failed(), &cursor), Some(key()));

        let created = Filters {
            status: Some(StatusFilter::Created),
            ..failed()
        };
        let pending = Filters {
            status: Some(StatusFilter::Pending),
            ..failed()
        };
        let overdue = Filters {
            overdue: true,
            ..pending.clone()
        };
        let since = Filters {
            since_ns: Some(0),
            ..failed()
        };
        let narrowed = |narrow: Narrowing| Filters { narrow, ..failed() };
        let reason = narrowed(Narrowing {
            failure_reason: Some("EMR down".into()),
            ..Narrowing::default()
        });
        let location = narrowed(Narrowing {
            location_id: Some("EMR down".into()),
            ..Narrowing::default()
        });
        let until = narrowed(Narrowing {
            until_ns: Some(0),
            ..Narrowing::default()
        });
        for other in [
            created,
            pending.clone(),
            overdue.clone(),
            since,
            Filters::default(),
            reason.clone(),
            location.clone(),
            until,
        ] {
            assert_eq!(cursors.open(&other, &cursor), None, "{other:?}");
        }
        assert_eq!(Cursors::new([8; 32]).open(&failed(), &cursor), None);
        let pending_cursor = cursors.issue(&pending, &key());
        assert_eq!(cursors.open(&overdue, &pending_cursor), None);
        // The same value under another filter's name is another listing.
        let reason_cursor = cursors.issue(&reason, &key());
        assert_eq!(cursors.open(&reason, &reason_cursor), Some(key()));
        assert_eq!(cursors.open(&location, &reason_cursor), None);
    }

    #[test]
    fn a_cursor_made_or_altered_by_hand_is_refused() {
        let cursors = Cursors::new([7; 32]);
        let cursor = cursors.issue(&failed(), &key());
        let (position, tag) = cursor.split_once('.').unwrap();
        let mut moved = key();
        moved.job_id = "43".into();
        let forged = hex::encode(serde_json::to_vec(&moved).unwrap());
        for bad in [
            position.to_owned(),
            format!("{forged}.{tag}"),
            format!("{position}.{}", &tag[..30]),
            format!("{position}.{}", "0".repeat(32)),
            format!("{position}.{tag}00"),
            String::new(),
            ".".into(),
        ] {
            assert_eq!(cursors.open(&failed(), &bad), None, "{bad}");
        }
    }
}
