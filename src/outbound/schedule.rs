//! When an undelivered message is tried again: after each configured delay
//! in turn (`outbound_retry_delays_secs`), each lengthened by a random
//! jitter so the retries of many messages, failed together when the app
//! went down, do not all arrive together when it comes back. Once the
//! delays run out the message is failed.

use std::time::Duration;

/// The default delays before each retry, in seconds: quick retries for a
/// blip, then every 10 hours, so an app down over a weekend (about 3.2
/// days) still gets every message; 13 attempts in all.
pub const DEFAULT_RETRY_DELAYS_SECS: [u64; 12] = [
    5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000,
];

/// The factor a delay is multiplied by spans `JITTER_MIN..JITTER_MAX`.
///
/// Jitter only lengthens: a symmetric ±20% would let the default schedule
/// shrink to 2.6 days, short of the weekend it is meant to outlast.
const JITTER_MIN: f64 = 1.0;
const JITTER_MAX: f64 = 1.2;

/// The delays before each retry of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// A schedule of the given delays, in seconds (as configured).
    pub fn from_secs(delays: &[u64]) -> Self {
        Self {
            delays: delays.iter().copied().map(Duration::from_secs).collect(),
        }
    }

    /// How long to wait before the next attempt, once `attempts_made`
    /// attempts have failed; `None` once the schedule is exhausted, when
    /// the message is failed. `jitter` is a draw from `0.0..1.0`
    /// ([`random_unit`]), mapped onto a factor of 1.0 to 1.2.
    ///
    /// The first attempt is not a retry: with no attempt made, it is due
    /// at once.
    pub fn delay_before_retry(&self, attempts_made: u32, jitter: f64) -> Option<Duration> {
        let Some(index) = attempts_made.checked_sub(1) else {
            return Some(Duration::ZERO);
        };
        let delay = *self.delays.get(usize::try_from(index).ok()?)?;
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(delay.mul_f64(JITTER_MIN + (JITTER_MAX - JITTER_MIN) * jitter))
    }

    /// Attempts a message gets in all: the first, then one per delay.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    /// Time from the first attempt to the last, before jitter (which adds
    /// up to a fifth): for the docs and the start-up log line.
    pub fn total_span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::from_secs(&DEFAULT_RETRY_DELAYS_SECS)
    }
}

/// A uniform draw from `0.0..1.0` for [`RetrySchedule::delay_before_retry`].
/// Jitter needs no cryptographic guarantee: if the OS source fails, the
/// middle of the range does.
pub fn random_unit() -> f64 {
    match getrandom::u64() {
        // The top 53 bits, the precision of an f64's mantissa.
        Ok(bits) => (bits >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// Time from the first attempt to the last with every delay drawn at `jitter`.
    fn span_at(schedule: &RetrySchedule, jitter: f64) -> Duration {
        (1..)
            .map_while(|made| schedule.delay_before_retry(made, jitter))
            .sum()
    }

    #[test]
    fn the_default_schedule_retries_within_seconds_and_lasts_over_three_days() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.attempts(), 13);
        for jitter in [0.0, 0.5, 0.999_999] {
            let first = schedule.delay_before_retry(1, jitter).unwrap();
            assert!(first >= Duration::from_secs(5), "{first:?}");
            assert!(first <= Duration::from_secs(6), "{first:?}");
        }
        assert!(span_at(&schedule, 0.0) >= 3 * DAY);
        assert_eq!(span_at(&schedule, 0.0), schedule.total_span());
        assert!(
            schedule.total_span() < 4 * DAY,
            "{:?}",
            schedule.total_span()
        );
        assert!(span_at(&schedule, 0.999_999) <= schedule.total_span().mul_f64(1.2));
    }

    #[test]
    fn the_schedule_ends_after_its_last_delay() {
        let schedule = RetrySchedule::from_secs(&[10, 20]);
        assert_eq!(schedule.delay_before_retry(0, 0.3), Some(Duration::ZERO));
        assert_eq!(
            schedule.delay_before_retry(1, 0.0),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            schedule.delay_before_retry(2, 0.5),
            Some(Duration::from_secs(22))
        );
        assert_eq!(schedule.delay_before_retry(3, 0.0), None);
        assert_eq!(schedule.delay_before_retry(u32::MAX, 0.0), None);
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.total_span(), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_a_fifth_whatever_is_passed() {
        let schedule = RetrySchedule::from_secs(&[100]);
        for (jitter, secs) in [
            (-1.0, 100.0),
            (0.0, 100.0),
            (0.25, 105.0),
            (1.0, 120.0),
            (7.0, 120.0),
            (f64::NAN, 100.0),
            (f64::INFINITY, 100.0),
        ] {
            let delay = schedule.delay_before_retry(1, jitter).unwrap();
            assert!(
                (delay.as_secs_f64() - secs).abs() < 1e-6,
                "{jitter}: {delay:?}"
            );
        }
    }

    #[test]
    fn random_units_fall_in_the_unit_interval_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)), "{draws:?}");
        assert!(draws.iter().any(|u| *u != draws[0]), "{draws:?}");
    }
}
