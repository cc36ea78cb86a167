//! The clinic's opening hours: when a webhook route with no deliveries
//! while jobs are pending is worth waking someone for.

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// `HH:MM-HH:MM` each day in the clinic's time zone. A window that closes
/// before it opens runs past midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClinicHours {
    opens: Time,
    closes: Time,
}

impl std::str::FromStr for ClinicHours {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "must be opening and closing times such as 07:00-19:00";
        let (opens, closes) = text.trim().split_once('-').ok_or(WHAT)?;
        let time = |part: &str| -> Result<Time, &'static str> {
            let (hour, minute) = part.trim().split_once(':').ok_or(WHAT)?;
            let in_range = |text: &str, max: i8| {
                (text.len() == 2)
                    .then(|| text.parse::<i8>().ok())
                    .flatten()
                    .filter(|n| (0..=max).contains(n))
            };
            let (hour, minute) = (
                in_range(hour, 23).ok_or(WHAT)?,
                in_range(minute, 59).ok_or(WHAT)?,
            );
            Time::new(hour, minute, 0, 0).map_err(|_| WHAT)
        };
        let (opens, closes) = (time(opens)?, time(closes)?);
        if opens == closes {
            return Err("must open and close at different times");
        }
        Ok(Self { opens, closes })
    }
}

/// The clinic's hours on the clinic's clock.
#[derive(Debug, Clone)]
pub struct ClinicClock {
    pub hours: ClinicHours,
    pub zone: TimeZone,
}

impl ClinicClock {
    pub fn is_open_now(&self) -> bool {
        self.hours.is_open(Timestamp::now(), &self.zone)
    }
}

impl ClinicHours {
    /// Whether `now` falls within the hours, on the clinic's clock.
    pub fn is_open(&self, now: Timestamp, zone: &TimeZone) -> bool {
        let clock = now.to_zoned_datetime(zone.clone()).time();
        if self.opens < self.closes {
            self.opens <= clock && clock < self.closes
        } else {
            clock >= self.opens || clock < self.closes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn hours_parse_and_refuse_what_is_not_a_window() {
        assert!("07:00-19:00".parse::<ClinicHours>().is_ok());
        assert!(" 22:30 - 06:00 ".parse::<ClinicHours>().is_ok());
        for bad in [
            "",
            "7-19",
            "07:00",
            "24:00-06:00",
            "07:60-08:00",
            "7:00-19:00",
            "08:00-08:00",
        ] {
            assert!(bad.parse::<ClinicHours>().is_err(), "{bad}");
        }
    }

    #[test]
    fn open_on_the_clinic_s_clock_and_overnight() {
        let day: ClinicHours = "07:00-19:00".parse().unwrap();
        let new_york = TimeZone::get("America/New_York").unwrap();
        // 11:59 and 12:00 UTC are 06:59 and 07:00 in New York (EST, -5).
        assert!(!day.is_open(at("2026-12-07T11:59:00Z"), &new_york));
        assert!(day.is_open(at("2026-12-07T12:00:00Z"), &new_york));
        assert!(day.is_open(at("2026-12-07T23:59:00Z"), &new_york));
        assert!(!day.is_open(at("2026-12-08T00:00:00Z"), &new_york));
        let night: ClinicHours = "22:00-06:00".parse().unwrap();
        assert!(night.is_open(at("2026-12-07T23:00:00Z"), &TimeZone::UTC));
        assert!(night.is_open(at("2026-12-07T05:59:00Z"), &TimeZone::UTC));
        assert!(!night.is_open(at("2026-12-07T06:00:00Z"), &TimeZone::UTC));
    }
}
