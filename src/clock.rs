//! Instants as the service keeps and compares them: Unix nanoseconds in an
//! `i64` (years 1678 to 2261) for sorting and ranges, RFC 3339 text in UTC
//! for display. Every conversion goes through here, so they all clamp and
//! format alike.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `at` as Unix nanoseconds; an instant beyond the `i64` range is as good
/// as the first or the last instant there is.
pub fn unix_ns(at: OffsetDateTime) -> i64 {
    at.unix_timestamp_nanos()
        .clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// Now, as Unix nanoseconds.
pub fn now_ns() -> i64 {
    unix_ns(OffsetDateTime::now_utc())
}

/// The instant `age` before now, as Unix nanoseconds.
pub fn ns_ago(age: Duration) -> i64 {
    now_ns().saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX))
}

/// Whether `at` has an exact Unix-nanosecond form (what ranks and orders
/// are kept as).
pub fn fits(at: &OffsetDateTime) -> bool {
    i64::try_from(at.unix_timestamp_nanos()).is_ok()
}

/// The instant `ns` Unix nanoseconds name.
pub fn from_unix_ns(ns: i64) -> OffsetDateTime {
    // Every i64 of nanoseconds is a valid instant (years 1677 to 2262).
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `at` as RFC 3339 text in UTC.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_beyond_the_range_clamp_to_its_ends() {
        let far = OffsetDateTime::parse("9999-01-01T00:00:00Z", &Rfc3339).unwrap();
        let early = OffsetDateTime::parse("1000-01-01T00:00:00Z", &Rfc3339).unwrap();
        assert_eq!(unix_ns(far), i64::MAX);
        assert_eq!(unix_ns(early), i64::MIN);
        assert!(!fits(&far) && !fits(&early));
        let now = OffsetDateTime::now_utc();
        assert!(fits(&now));
        assert_eq!(from_unix_ns(unix_ns(now)), now);
        assert_eq!(
            rfc3339(from_unix_ns(1_700_000_000_000_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
