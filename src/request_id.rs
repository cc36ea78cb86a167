//! The id of a request, in its log lines, its audit rows and the answer's
//! `X-Request-Id`: the client's own when it is a short plain token (a
//! proxy's or the caller's, so both sides can find the same request),
//! otherwise a fresh one. An unusable offered id is dropped before
//! anything reads it: a stranger cannot make a log line or an audit row
//! longer, or put control characters in it.
//!
//! A fresh id looks like a random UUID but costs no system call: the
//! process draws a random key once, and each id is a counter scrambled
//! under it (a bijection, so no two ids of a process are equal; the key
//! makes them differ between processes). Ids need not be unpredictable:
//! they name a request, they do not authorise anything.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest offered id that is kept.
pub const MAX_LEN: usize = 64;

/// Whether an offered id is kept: 1 to [`MAX_LEN`] characters of
/// `[A-Za-z0-9._:-]`.
pub fn usable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// Removes an offered id that is not [`usable`], so a fresh one is made.
pub fn drop_unusable<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers_mut();
    let mut offered = headers.get_all(&HEADER).iter();
    let keep =
        matches!((offered.next(), offered.next()), (Some(id), None) if usable(id.as_bytes()));
    if !keep {
        headers.remove(&HEADER);
    }
    request
}

/// The layers that give each request its id and return it in the answer,
/// outermost first: drop an unusable offer, set one, propagate it.
pub fn set() -> SetRequestIdLayer<Fresh> {
    SetRequestIdLayer::new(HEADER, Fresh)
}

/// Makes fresh request ids (see the module's doc).
#[derive(Clone, Copy)]
pub struct Fresh;

impl MakeRequestId for Fresh {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&fresh()).ok().map(RequestId::new)
    }
}

/// The next fresh id, in the form of a version 4 UUID.
fn fresh() -> String {
    static KEY: OnceLock<[u64; 2]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key = KEY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let (high, low) = bytes.split_at(8);
        [
            u64::from_le_bytes(high.try_into().expect("8 bytes")),
            u64::from_le_bytes(low.try_into().expect("8 bytes")),
        ]
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let high = scramble(n ^ key[0]);
    let low = scramble(n.wrapping_add(key[1]));
    // Version 4, variant 10xx, as a random UUID has them.
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// SplitMix64's finaliser: a bijection on 64 bits that spreads every input
/// bit over the output.
fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn propagate() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_look_like_random_uuids_and_never_repeat() {
        let ids: Vec<String> = (0..10_000).map(|_| fresh()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids[..100] {
            assert_eq!(id.len(), 36, "{id}");
            assert!(usable(id.as_bytes()), "{id}");
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "{id}");
            assert!("89ab".contains(&parts[3][..1]), "{id}");
        }
    }

    #[test]
    fn only_short_plain_ids_are_kept() {
        for kept in ["a", "req-1.2:3_x", &"x".repeat(MAX_LEN)] {
            assert!(usable(kept.as_bytes()), "{kept}");
        }
        for dropped in [
            "",
            &"x".repeat(MAX_LEN + 1),
            "a b",
            "a\u{202e}b",
            "a/b",
            "a\nb",
            "é",
        ] {
            assert!(!usable(dropped.as_bytes()), "{dropped:?}");
        }
    }

    #[test]
    fn an_unusable_or_repeated_offer_is_dropped() {
        let request = |ids: &[&str]| {
            let mut builder = Request::builder();
            for id in ids {
                builder = builder.header(HEADER, *id);
            }
            drop_unusable(builder.body(()).unwrap())
        };
        assert_eq!(request(&["abc"]).headers()[HEADER], "abc");
        assert!(!request(&["a b"]).headers().contains_key(HEADER));
        assert!(!request(&["abc", "def"]).headers().contains_key(HEADER));
        assert!(
            !request(&[&"x".repeat(30_000)])
                .headers()
                .contains_key(HEADER)
        );
    }
}
