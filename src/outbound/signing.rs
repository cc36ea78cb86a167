//! The `webhook-signature` of Standard Webhooks v1.0.0: `v1,` then the
//! base64 of HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`,
//! keyed with the decoded bytes of a `whsec_<base64>` secret.
//!
//! The id stays the same on every retry (the app dedupes on it); the
//! timestamp is the attempt's own, so each retry is signed afresh and a
//! receiver's replay window holds.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret in the spec's written form.
const PREFIX: &str = "whsec_";

/// The spec's bounds on a key's length, in bytes: shorter keys are weak,
/// and some receivers' libraries refuse longer ones.
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// An endpoint's signing key: the bytes of a `whsec_` secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

/// Why a secret is not a signing key. The messages never quote the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("must start with whsec_")]
    MissingPrefix,
    #[error("must be whsec_ followed by standard base64 (A-Z a-z 0-9 + /, = padding)")]
    NotBase64,
    #[error("decodes to {0} bytes; it must be 24 to 64")]
    Length(usize),
}

impl SigningKey {
    /// Reads a secret written `whsec_<standard base64 of 24 to 64 bytes>`.
    ///
    /// The prefix is required (the reference libraries make it optional):
    /// a bare base64 string is more likely some other secret pasted into
    /// the wrong key than a signing key.
    pub fn parse(secret: &str) -> Result<Self, SigningKeyError> {
        let encoded = secret
            .strip_prefix(PREFIX)
            .ok_or(SigningKeyError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SigningKeyError::NotBase64)?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(SigningKeyError::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header's value for one attempt: `v1,<base64>`.
    pub fn signature(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the spec's reference libraries publish.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signatures_reproduce_the_published_test_vector() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(key.signature(ID, TIMESTAMP, BODY), EXPECTED);
        // And the third-party library agrees on the vector itself.
        let reference = standardwebhooks::Webhook::new(SECRET).unwrap();
        assert_eq!(reference.sign(ID, TIMESTAMP, BODY).unwrap(), EXPECTED);
    }

    #[test]
    fn the_standard_webhooks_library_verifies_our_signatures() {
        let secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let key = SigningKey::parse(&secret).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let body = br#"{"type":"job.created","data":{"job_id":"j_1"}}"#;
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", ID.parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert(
            "webhook-signature",
            key.signature(ID, now, body).parse().unwrap(),
        );
        let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
        verifier.verify(body, &headers).unwrap();
        // A changed byte, or another id, is refused.
        assert!(verifier.verify(b"{}", &headers).is_err());
        headers.insert("webhook-id", "msg_other".parse().unwrap());
        assert!(verifier.verify(body, &headers).is_err());
    }

    #[test]
    fn secrets_are_whsec_and_standard_base64_of_24_to_64_bytes() {
        let of = |n: usize| format!("whsec_{}", STANDARD.encode(vec![1u8; n]));
        assert_eq!(SigningKey::parse(&of(23)), Err(SigningKeyError::Length(23)));
        assert!(SigningKey::parse(&of(24)).is_ok());
        assert!(SigningKey::parse(&of(64)).is_ok());
        assert_eq!(SigningKey::parse(&of(65)), Err(SigningKeyError::Length(65)));
        assert_eq!(
            SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SigningKeyError::MissingPrefix)
        );
        for bad in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!",
            // URL-safe alphabet, or padding left out of a 32-byte key.
            "whsec_-_-_-_-_-_-_-_-_-_-_-_-_-_-_",
            "whsec_AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
            "whsec_",
        ] {
            let error = SigningKey::parse(bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    SigningKeyError::NotBase64 | SigningKeyError::Length(0)
                ),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn a_key_never_prints() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
        let error = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!").unwrap_err();
        assert!(!error.to_string().contains("MfKQ9r8"));
    }
}
