//! The hours of a clinic's day, and a day's outcomes by hour set beside the
//! day before's.
//!
//! A day is cut into hours counted from its start (midnight in the clinic's
//! zone), so a day when the clocks change has 23 or 25 of them. The two
//! days are matched by the clock: the day before's 09:00 beside this day's
//! 09:00, whatever the clocks did in between. An hour one day lacks (the
//! one skipped in spring, the repeated one in autumn) is shown as missing
//! that day, not as none.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use super::today::day_bounds;
use crate::store::{HOUR_NS, HourOutcomes};

/// One hour of a day, as the clinic's clock names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hour {
    /// The clock when it starts, and whether it is the second hour of
    /// the day the clock names so (autumn's repeated hour).
    key: (Time, bool),
    /// `09:00`; a repeated hour carries its zone's abbreviation
    /// (`01:00 EDT`, `01:00 EST`).
    pub label: String,
}

/// The hours of `day`, in order: 24, or 23 or 25 on a day the clocks
/// change (the last may be short where a change is not a whole hour).
pub fn hours_of(day: Date, zone: &TimeZone) -> Option<Vec<Hour>> {
    let (from_ns, to_ns) = day_bounds(day, zone)?;
    let starts: Vec<jiff::ZonedDateTime> = (from_ns..to_ns)
        .step_by(usize::try_from(HOUR_NS).ok()?)
        .map(|ns| {
            Timestamp::from_nanosecond(i128::from(ns))
                .map(|t| t.to_zoned_datetime(zone.clone()))
                .ok()
        })
        .collect::<Option<_>>()?;
    let mut hours: Vec<Hour> = Vec::with_capacity(starts.len());
    for (n, start) in starts.iter().enumerate() {
        let time = start.time();
        let repeated = starts.iter().filter(|s| s.time() == time).count() > 1;
        let label = if repeated {
            start.strftime("%H:%M %Z").to_string()
        } else {
            start.strftime("%H:%M").to_string()
        };
        let again = starts[..n].iter().any(|s| s.time() == time);
        hours.push(Hour {
            key: (time, again),
            label,
        });
    }
    Some(hours)
}

/// Outcomes of one hour of one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: i64,
    pub failed: i64,
}

impl Counts {
    pub fn total(self) -> i64 {
        self.created + self.failed
    }
}

/// One hour of the clock with its outcomes on the day shown and the day
/// before; `None` where that day had no such hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourRow {
    pub label: String,
    pub shown: Option<Counts>,
    pub before: Option<Counts>,
}

/// The rows of the chart: every hour of either day, in the clock's order,
/// each with both days' outcomes. `counts` are as the store reads them
/// (by the hour since the day's start).
pub fn compare(
    shown: &[Hour],
    shown_counts: &[HourOutcomes],
    before: &[Hour],
    before_counts: &[HourOutcomes],
) -> Vec<HourRow> {
    let counted = |hours: &[Hour], counts: &[HourOutcomes]| -> Vec<Counts> {
        let mut by_hour = vec![Counts::default(); hours.len()];
        for count in counts {
            if let Some(slot) = usize::try_from(count.hour)
                .ok()
                .and_then(|n| by_hour.get_mut(n))
            {
                slot.created += count.created;
                slot.failed += count.failed;
            }
        }
        by_hour
    };
    let shown_by_hour = counted(shown, shown_counts);
    let before_by_hour = counted(before, before_counts);
    let (mut a, mut b) = (0, 0);
    let mut rows = Vec::with_capacity(shown.len().max(before.len()));
    while a < shown.len() || b < before.len() {
        let order = match (shown.get(a), before.get(b)) {
            (Some(x), Some(y)) => x.key.cmp(&y.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let row = match order {
            std::cmp::Ordering::Equal => {
                a += 1;
                b += 1;
                HourRow {
                    label: shown[a - 1].label.clone(),
                    shown: Some(shown_by_hour[a - 1]),
                    before: Some(before_by_hour[b - 1]),
                }
            }
            std::cmp::Ordering::Less => {
                a += 1;
                HourRow {
                    label: shown[a - 1].label.clone(),
                    shown: Some(shown_by_hour[a - 1]),
                    before: None,
                }
            }
            std::cmp::Ordering::Greater => {
                b += 1;
                HourRow {
                    label: before[b - 1].label.clone(),
                    shown: None,
                    before: Some(before_by_hour[b - 1]),
                }
            }
        };
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn date(text: &str) -> Date {
        text.parse().unwrap()
    }

    fn labels(hours: &[Hour]) -> Vec<&str> {
        hours.iter().map(|h| h.label.as_str()).collect()
    }

    #[test]
    fn an_ordinary_day_has_24_hours_named_by_the_clock() {
        let hours = hours_of(date("2026-11-20"), &zone("America/New_York")).unwrap();
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0].label, "00:00");
        assert_eq!(hours[23].label, "23:00");
    }

    #[test]
    fn the_autumn_change_repeats_an_hour_and_the_spring_one_skips_one() {
        let new_york = zone("America/New_York");
        let autumn = hours_of(date("2026-11-01"), &new_york).unwrap();
        assert_eq!(autumn.len(), 25);
        assert_eq!(
            labels(&autumn[..4]),
            ["00:00", "01:00 EDT", "01:00 EST", "02:00"]
        );
        let spring = hours_of(date("2026-03-08"), &new_york).unwrap();
        assert_eq!(spring.len(), 23);
        assert_eq!(labels(&spring[..3]), ["00:00", "01:00", "03:00"]);
    }

    #[test]
    fn the_days_are_matched_by_the_clock_and_a_missing_hour_is_missing() {
        let new_york = zone("America/New_York");
        // The day after the autumn change, against the 25-hour day.
        let shown = hours_of(date("2026-11-02"), &new_york).unwrap();
        let before = hours_of(date("2026-11-01"), &new_york).unwrap();
        let shown_counts = [
            HourOutcomes {
                hour: 1,
                created: 2,
                failed: 0,
            },
            HourOutcomes {
                hour: 2,
                created: 0,
                failed: 1,
            },
        ];
        let before_counts = [
            HourOutcomes {
                hour: 1,
                created: 5,
                failed: 0,
            },
            HourOutcomes {
                hour: 2,
                created: 7,
                failed: 0,
            },
            HourOutcomes {
                hour: 3,
                created: 0,
                failed: 3,
            },
        ];
        let rows = compare(&shown, &shown_counts, &before, &before_counts);
        assert_eq!(rows.len(), 25);
        let counts = |created, failed| Some(Counts { created, failed });
        assert_eq!(
            rows[1],
            HourRow {
                label: "01:00".into(),
                shown: counts(2, 0),
                before: counts(5, 0),
            }
        );
        // The repeated hour was the day before's only.
        assert_eq!(
            rows[2],
            HourRow {
                label: "01:00 EST".into(),
                shown: None,
                before: counts(7, 0),
            }
        );
        assert_eq!(
            rows[3],
            HourRow {
                label: "02:00".into(),
                shown: counts(0, 1),
                before: counts(0, 3),
            }
        );
        assert_eq!(rows[24].label, "23:00");
    }

    #[test]
    fn counts_past_the_day_are_ignored() {
        let hours = hours_of(date("2026-11-20"), &zone("UTC")).unwrap();
        let rows = compare(
            &hours,
            &[HourOutcomes {
                hour: 24,
                created: 1,
                failed: 0,
            }],
            &hours,
            &[],
        );
        assert_eq!(rows.len(), 24);
        assert!(rows.iter().all(|r| r.shown == Some(Counts::default())));
    }
}
