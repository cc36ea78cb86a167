//! Bearer tokens for the status API.
//!
//! Tokens are kept only as SHA-256 digests, and a presented token is hashed
//! and compared with each of them in constant time, so neither the length
//! nor the content of a configured token shows in response times.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{HASHED_TOKEN_PREFIX, Secret};

#[derive(Clone)]
pub struct ApiTokens {
    digests: Vec<[u8; 32]>,
}

impl ApiTokens {
    /// Plain tokens are hashed here; `sha256:<hex>` entries are digests
    /// already (validated with the configuration).
    pub fn new(tokens: &[Secret]) -> Self {
        let digests = tokens
            .iter()
            .map(|token| {
                let token = token.expose();
                token
                    .strip_prefix(HASHED_TOKEN_PREFIX)
                    .and_then(|hex_digest| {
                        let mut digest = [0u8; 32];
                        hex::decode_to_slice(hex_digest, &mut digest).ok()?;
                        Some(digest)
                    })
                    .unwrap_or_else(|| digest(token))
            })
            .collect();
        Self { digests }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether an `Authorization` header value carries a configured token.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented = digest(token);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.ct_eq(&presented)
            })
            .into()
    }
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(header: &[u8]) -> Option<&str> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_bearer_token_is_allowed() {
        let tokens = ApiTokens::new(&[Secret::new("tok_a"), Secret::new("tok_b")]);
        assert!(tokens.allows(Some(b"Bearer tok_a")));
        assert!(tokens.allows(Some(b"bearer tok_b")));
        for refused in [
            &b"Bearer tok_c"[..],
            b"Bearer ",
            b"tok_a",
            b"Basic tok_a",
            b"Bearer tok_a2",
            b"",
        ] {
            assert!(
                !tokens.allows(Some(refused)),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(!tokens.allows(None));
        assert!(!ApiTokens::new(&[]).allows(Some(b"Bearer anything")));
    }

    #[test]
    fn a_hashed_token_allows_the_token_it_was_made_from() {
        let hashed = format!("sha256:{}", hex::encode(digest("tok_plain")));
        let tokens = ApiTokens::new(&[Secret::new(hashed.clone())]);
        assert!(tokens.allows(Some(b"Bearer tok_plain")));
        assert!(!tokens.allows(Some(format!("Bearer {hashed}").as_bytes())));
    }
}
