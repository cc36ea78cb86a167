//! Time to the EMR by location: how long registered jobs took from their
//! submission to their note's creation in the EMR, as the median (p50) and
//! the 95th percentile (p95) of each location's jobs.
//!
//! Only a registered job has a submission time, and only a created one
//! reached the EMR: failures and jobs never registered are not counted.

use crate::store::TimeToEmr;

/// Jobs read for one day at most: the figures of a busier day are those of
/// its first jobs (the page says so). A day's worth for most clinics, and a
/// few megabytes.
pub const READ_AT_MOST: u32 = 100_000;

/// Locations shown each on its own, busiest first; the rest are summed as
/// one.
pub const LOCATIONS_SHOWN: usize = 20;

/// Where a row's jobs were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Location(String),
    /// Jobs whose outcome named no location.
    Unnamed,
    /// The locations past [`LOCATIONS_SHOWN`], this many of them.
    Others(usize),
    /// Every location together.
    All,
}

/// The times of one place's jobs, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceTimes {
    pub place: Place,
    pub jobs: usize,
    pub p50: f64,
    pub p95: f64,
}

/// A day's times to the EMR.
#[derive(Debug, Clone, PartialEq)]
pub struct EmrTimes {
    /// Busiest first, then by name; the other locations last.
    pub places: Vec<PlaceTimes>,
    /// Every job of the day together; `None` when there was none.
    pub all: Option<PlaceTimes>,
    /// [`READ_AT_MOST`] jobs were read: there may have been more.
    pub cut: bool,
}

/// The times of `times` (as [`crate::store::Store::times_to_emr`] read
/// them, at most `read_at_most`) by place. A negative time (the clocks of
/// Cobalt and of whoever registered the job disagree) counts as zero.
pub fn by_place(times: Vec<TimeToEmr>, read_at_most: u32) -> EmrTimes {
    let cut = times.len() >= read_at_most as usize;
    let mut groups: std::collections::BTreeMap<Option<String>, Vec<i64>> = Default::default();
    let mut every = Vec::with_capacity(times.len());
    for time in times {
        let nanos = time.nanos.max(0);
        every.push(nanos);
        groups.entry(time.location_id).or_default().push(nanos);
    }
    let mut groups: Vec<(Option<String>, Vec<i64>)> = groups.into_iter().collect();
    // Busiest first; a stable sort keeps the map's order (by name) within a
    // count, the unnamed place first.
    groups.sort_by_key(|group| std::cmp::Reverse(group.1.len()));
    let rest = groups.split_off(groups.len().min(LOCATIONS_SHOWN));
    let mut places: Vec<PlaceTimes> = groups
        .into_iter()
        .map(|(location, nanos)| {
            let place = location.map_or(Place::Unnamed, Place::Location);
            times_of(place, nanos)
        })
        .collect();
    if !rest.is_empty() {
        let others = rest.len();
        let nanos = rest.into_iter().flat_map(|(_, nanos)| nanos).collect();
        places.push(times_of(Place::Others(others), nanos));
    }
    let all = (!every.is_empty()).then(|| times_of(Place::All, every));
    EmrTimes { places, all, cut }
}

fn times_of(place: Place, mut nanos: Vec<i64>) -> PlaceTimes {
    nanos.sort_unstable();
    PlaceTimes {
        place,
        jobs: nanos.len(),
        p50: percentile(&nanos, 0.50),
        p95: percentile(&nanos, 0.95),
    }
}

/// The `p`th percentile of `sorted` nanoseconds, in seconds, interpolated
/// between the nearest two as PostgreSQL's `percentile_cont` does.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let at = p * last as f64;
    let (below, above) = (at.floor() as usize, at.ceil() as usize);
    let seconds = |n: i64| n as f64 / 1e9;
    seconds(sorted[below]) + (seconds(sorted[above]) - seconds(sorted[below])) * (at - at.floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(location: Option<&str>, seconds: i64) -> TimeToEmr {
        TimeToEmr {
            location_id: location.map(str::to_owned),
            nanos: seconds * 1_000_000_000,
        }
    }

    #[test]
    fn percentiles_interpolate_as_percentile_cont() {
        let times = by_place(
            vec![
                at(Some("east"), 600),
                at(Some("east"), 60),
                at(Some("east"), 120),
                at(Some("west"), 30),
            ],
            READ_AT_MOST,
        );
        assert_eq!(
            times.places,
            [
                PlaceTimes {
                    place: Place::Location("east".into()),
                    jobs: 3,
                    p50: 120.0,
                    // 120 + 0.9 × (600 − 120)
                    p95: 552.0,
                },
                PlaceTimes {
                    place: Place::Location("west".into()),
                    jobs: 1,
                    p50: 30.0,
                    p95: 30.0,
                },
            ]
        );
        let all = times.all.unwrap();
        assert_eq!((all.jobs, all.p50), (4, 90.0));
        assert!(!times.cut);
    }

    #[test]
    fn past_the_busiest_locations_the_rest_are_one_row() {
        let mut times = Vec::new();
        for n in 0..25 {
            for _ in 0..(30 - n) {
                times.push(at(Some(&format!("loc-{n:02}")), n + 1));
            }
        }
        times.push(at(None, -5));
        let times = by_place(times, READ_AT_MOST);
        assert_eq!(times.places.len(), LOCATIONS_SHOWN + 1);
        assert_eq!(times.places[0].place, Place::Location("loc-00".into()));
        assert_eq!(times.places[19].place, Place::Location("loc-19".into()));
        let others = &times.places[20];
        // loc-20 to loc-24, and the job without a location.
        assert_eq!(others.place, Place::Others(6));
        assert_eq!(others.jobs, 10 + 9 + 8 + 7 + 6 + 1);
        // A negative time counts as zero.
        let unnamed = by_place(vec![at(None, -5)], READ_AT_MOST);
        assert_eq!(unnamed.places[0].place, Place::Unnamed);
        assert_eq!(unnamed.places[0].p95, 0.0);
    }

    #[test]
    fn nothing_read_is_no_row_and_a_full_read_says_it_was_cut() {
        let none = by_place(Vec::new(), READ_AT_MOST);
        assert!(none.places.is_empty() && none.all.is_none() && !none.cut);
        assert!(by_place(vec![at(Some("a"), 1), at(Some("a"), 2)], 2).cut);
    }
}
