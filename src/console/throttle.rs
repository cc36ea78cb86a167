//! Refused sign-ins, by client address: after `console_sign_in_attempts`
//! refusals within `console_sign_in_window_secs`, every sign-in from that
//! address is answered 429 until the window passes (a right token too, so
//! the answer tells a guesser nothing).
//!
//! Refusals cost the database nothing per attempt: the first from an
//! address is written to the audit trail at once, the rest are counted
//! here and written as one row per address per report (every minute),
//! with the count ([`SignInRefusals::report`]). What is tracked is bounded: an
//! IPv6 client counts by its /64 (one host can hold all of it), and past
//! [`MAX_CLIENTS`] addresses, new ones share one tally (so a flood from
//! many addresses throttles new addresses together rather than growing
//! memory). Counts are kept by each replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at once, beyond which new ones share a tally.
pub const MAX_CLIENTS: usize = 10_000;

/// The key refusals are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Address(IpAddr),
    /// Every address beyond [`MAX_CLIENTS`].
    Others,
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Self::Address(address) => address.fmt(f),
            Self::Others => f.write_str("(other addresses)"),
        }
    }
}

/// An IPv6 client by its /64; an IPv4 one by its address.
fn key_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[derive(Debug)]
struct Tally {
    window_started: Instant,
    refused_in_window: u32,
    /// Refusals (throttled ones included) not yet in an audit row.
    unreported: u64,
    throttled_unreported: u64,
    /// A refusal was written at once since the last report.
    first_written: bool,
}

/// What the caller of [`SignInRefusals::check`] should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the token.
    Go,
    /// Answer 429; the window ends after this long.
    Wait(Duration),
}

/// What to say of a refusal now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noteworthy {
    /// The first from its client since the last report: audit and log it
    /// now (it is not in the next report).
    First,
    /// The one that starts throttling its client: log it.
    Throttling,
    /// Counted for the next report.
    Quiet,
}

/// One audit row's worth: the refusals from one client since the last
/// report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub client: Client,
    pub refused: u64,
    pub throttled: u64,
}

pub struct SignInRefusals {
    attempts: u32,
    window: Duration,
    clients: Mutex<HashMap<Client, Tally>>,
}

impl SignInRefusals {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a sign-in from `address` may be checked now. A throttled
    /// attempt counts for the audit row, but does not extend the window.
    pub fn check(&self, address: IpAddr, now: Instant) -> Verdict {
        let mut clients = self.clients.lock().expect("not poisoned");
        let client = Self::client_in(&clients, key_of(address));
        let Some(tally) = clients.get_mut(&client) else {
            return Verdict::Go;
        };
        let ends = tally.window_started + self.window;
        if now >= ends || tally.refused_in_window < self.attempts {
            return Verdict::Go;
        }
        tally.unreported += 1;
        tally.throttled_unreported += 1;
        Verdict::Wait(ends - now)
    }

    /// Counts a refused sign-in from `address`.
    pub fn refused(&self, address: IpAddr, now: Instant) -> (Client, Noteworthy) {
        let mut clients = self.clients.lock().expect("not poisoned");
        let client = Self::client_in(&clients, key_of(address));
        let tally = clients.entry(client).or_insert(Tally {
            window_started: now,
            refused_in_window: 0,
            unreported: 0,
            throttled_unreported: 0,
            first_written: false,
        });
        if now >= tally.window_started + self.window {
            tally.window_started = now;
            tally.refused_in_window = 0;
        }
        tally.refused_in_window += 1;
        let noteworthy = if !tally.first_written {
            tally.first_written = true;
            Noteworthy::First
        } else {
            tally.unreported += 1;
            if tally.refused_in_window == self.attempts {
                Noteworthy::Throttling
            } else {
                Noteworthy::Quiet
            }
        };
        (client, noteworthy)
    }

    /// The refusals since the last report, one entry per client, and
    /// forgets clients whose window has passed with nothing to report.
    pub fn report(&self, now: Instant) -> Vec<Report> {
        let mut clients = self.clients.lock().expect("not poisoned");
        let mut reports = Vec::new();
        clients.retain(|client, tally| {
            tally.first_written = false;
            if tally.unreported > 0 {
                reports.push(Report {
                    client: *client,
                    refused: tally.unreported,
                    throttled: tally.throttled_unreported,
                });
                tally.unreported = 0;
                tally.throttled_unreported = 0;
            }
            now < tally.window_started + self.window
        });
        reports
    }

    /// The tally `key` counts under: its own if tracked or if there is
    /// room, else the shared one.
    fn client_in(clients: &HashMap<Client, Tally>, key: IpAddr) -> Client {
        let own = Client::Address(key);
        if clients.contains_key(&own) || clients.len() < MAX_CLIENTS {
            own
        } else {
            Client::Others
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_eleventh_attempt_in_the_window_waits_until_it_passes() {
        let refusals = SignInRefusals::new(10, Duration::from_secs(300));
        let start = Instant::now();
        let guesser = ip("203.0.113.9");
        for n in 1..=10 {
            assert_eq!(refusals.check(guesser, start), Verdict::Go, "attempt {n}");
            let (_, note) = refusals.refused(guesser, start);
            let expected = match n {
                1 => Noteworthy::First,
                10 => Noteworthy::Throttling,
                _ => Noteworthy::Quiet,
            };
            assert_eq!(note, expected, "attempt {n}");
        }
        let later = start + Duration::from_secs(100);
        assert_eq!(
            refusals.check(guesser, later),
            Verdict::Wait(Duration::from_secs(200))
        );
        // Another address is not held back.
        assert_eq!(refusals.check(ip("203.0.113.10"), later), Verdict::Go);
        // Once the window has passed, the address may try again.
        assert_eq!(
            refusals.check(guesser, start + Duration::from_secs(300)),
            Verdict::Go
        );
    }

    #[test]
    fn refusals_are_reported_once_per_client_with_their_count() {
        let refusals = SignInRefusals::new(10, Duration::from_secs(300));
        let now = Instant::now();
        for _ in 0..2_000 {
            if refusals.check(ip("203.0.113.9"), now) == Verdict::Go {
                refusals.refused(ip("203.0.113.9"), now);
            }
        }
        // One host's /64 counts as one client.
        assert_eq!(
            refusals.refused(ip("2001:db8::1"), now).1,
            Noteworthy::First
        );
        assert_eq!(
            refusals.refused(ip("2001:db8::2"), now).1,
            Noteworthy::Quiet
        );
        assert_eq!(
            refusals.refused(ip("2001:db8::3"), now).1,
            Noteworthy::Quiet
        );
        let mut reports = refusals.report(now);
        reports.sort_by_key(|r| r.refused);
        // The first refusal of each was written at once.
        assert_eq!(
            reports,
            vec![
                Report {
                    client: Client::Address(ip("2001:db8::")),
                    refused: 2,
                    throttled: 0
                },
                Report {
                    client: Client::Address(ip("203.0.113.9")),
                    refused: 1_999,
                    throttled: 1_990
                },
            ]
        );
        assert_eq!(reports[0].client.to_string(), "2001:db8::/64");
        // Nothing new: nothing to report; after a report, the next
        // refusal is written at once again.
        assert!(refusals.report(now).is_empty());
        assert_eq!(
            refusals.refused(ip("2001:db8::1"), now).1,
            Noteworthy::First
        );
        assert!(refusals.report(now).is_empty());
        // The window over: forgotten.
        refusals.report(now + Duration::from_secs(300));
        assert!(refusals.clients.lock().unwrap().is_empty());
    }

    #[test]
    fn past_the_limit_new_addresses_share_one_tally() {
        let refusals = SignInRefusals::new(3, Duration::from_secs(300));
        let now = Instant::now();
        for n in 0..MAX_CLIENTS as u32 {
            refusals.refused(IpAddr::from(n.to_be_bytes()), now);
        }
        let (client, _) = refusals.refused(ip("203.0.113.9"), now);
        assert_eq!(client, Client::Others);
        refusals.refused(ip("203.0.113.10"), now);
        refusals.refused(ip("203.0.113.11"), now);
        assert!(matches!(
            refusals.check(ip("203.0.113.12"), now),
            Verdict::Wait(_)
        ));
        assert_eq!(refusals.clients.lock().unwrap().len(), MAX_CLIENTS + 1);
    }
}
