//! The id of a request, in its log lines, its audit rows and the answer's
//! `X-Request-Id`: the client's own when it is a short plain token (a
//! proxy's or the caller's, so both sides can find the same request),
//! otherwise a fresh one. An unusable offered id is dropped before
//! anything reads it: a stranger cannot make a log line or an audit row
//! longer, or put control characters in it.

use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

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
pub fn set() -> SetRequestIdLayer<MakeRequestUuid> {
    SetRequestIdLayer::new(HEADER, MakeRequestUuid)
}

pub fn propagate() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

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
