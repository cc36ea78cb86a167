//! Ids and times as Cobalt writes them, unique across fakes and test
//! processes.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use time::macros::format_description;

/// splitmix64: spreads a seed (or a counter) over all 64 bits.
pub(super) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number never returned before in this process, and a salt unlikely to
/// repeat in another: ids stay unique across fakes and test processes
/// (nextest runs each test in a process of its own).
fn unique() -> (u64, u64) {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    static SALT: OnceLock<u64> = OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        splitmix(nanos ^ u64::from(std::process::id()))
    });
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    (n, splitmix(salt ^ n))
}

/// 24 lowercase hex characters, as Cobalt's `patient_note_id`.
pub(super) fn new_note_id() -> String {
    let (n, mixed) = unique();
    format!("{mixed:016x}{:08x}", n as u32)
}

pub(super) fn new_event_id() -> String {
    let (n, mixed) = unique();
    format!("evt_{mixed:016x}{:08x}", n as u32)
}

/// A UUID-like `emr_note_id`.
pub(super) fn new_emr_note_id() -> String {
    let (n, mixed) = unique();
    let low = splitmix(mixed ^ n);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        mixed >> 32,
        (mixed >> 16) & 0xffff,
        mixed & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// Now, as Cobalt writes times: RFC 3339 in UTC with milliseconds.
pub(super) fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .expect("a formattable time")
}
