//! Authenticity of a delivery: Cobalt's `cobalt-verification` header.
//!
//! The header is the hex HMAC-SHA256 of the payload, keyed with the webhook
//! secret string as it is. Cobalt computes it over `JSON.stringify(payload)`,
//! which is the body itself when Cobalt posts that text (the usual case), so
//! the raw bytes are tried first and the JavaScript serialization of the
//! parsed body second. Several secrets may be active while one is rotated:
//! any one matching is enough. Every comparison runs in constant time
//! (`Mac::verify_slice`).
//!
//! Deliveries refused for their signature are counted by hour
//! ([`SignatureRejections`]), for the console.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::canonical_json;
use crate::secret::Secret;

/// The header that carries the signature.
pub const HEADER: &str = "cobalt-verification";

const SIGNATURE_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the cobalt-verification header is missing")]
    Missing,
    #[error("the cobalt-verification header is not 64 hexadecimal characters")]
    Malformed,
    #[error("the signature matches no active webhook secret")]
    Mismatch,
}

/// Checks signatures against the active webhook secrets.
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
}

impl Verifier {
    pub fn new(secrets: Vec<Secret>) -> Self {
        Self { secrets }
    }

    /// Accepts `body` when `header` is the signature of its raw bytes, or of
    /// its JavaScript serialization, under any active secret.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let signature = decode(header.ok_or(SignatureError::Missing)?)?;
        if self.any_secret_signed(body, &signature) {
            return Ok(());
        }
        // Only a body that parses has a JavaScript form; anything else simply
        // does not match, and its defects are not reported to an unknown sender.
        let parsed: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| SignatureError::Mismatch)?;
        let js_form = canonical_json::to_js_string(&parsed);
        if js_form.as_bytes() != body && self.any_secret_signed(js_form.as_bytes(), &signature) {
            return Ok(());
        }
        Err(SignatureError::Mismatch)
    }

    fn any_secret_signed(&self, message: &[u8], signature: &[u8]) -> bool {
        // No early exit: every secret is tried, so timing does not reveal which
        // one matched.
        self.secrets.iter().fold(false, |matched, secret| {
            let verified = mac(secret, message).verify_slice(signature).is_ok();
            matched | verified
        })
    }
}

/// The signature Cobalt would send for `message` under `secret`.
pub fn sign(secret: &Secret, message: &[u8]) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

fn mac(secret: &Secret, message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(message);
    mac
}

/// Cobalt sends lowercase hex; uppercase decodes to the same bytes and is
/// accepted too, since the case carries no authenticity.
fn decode(header: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignatureError> {
    let trimmed = header.trim_ascii();
    let mut signature = [0u8; SIGNATURE_LEN];
    hex::decode_to_slice(trimmed, &mut signature).map_err(|_| SignatureError::Malformed)?;
    Ok(signature)
}

/// Deliveries refused for their signature, by hour, over the last two days
/// (for the console: a wrong secret shows up there first). Counted by this
/// process, in memory: a refused delivery costs no write.
#[derive(Default)]
pub struct SignatureRejections {
    /// (hour since the epoch, count), newest last.
    hours: std::sync::Mutex<std::collections::VecDeque<(i64, u64)>>,
}

impl SignatureRejections {
    const HOURS_KEPT: usize = 48;

    pub fn note(&self, at: OffsetDateTime) {
        let hour = at.unix_timestamp().div_euclid(3600);
        let mut hours = self.hours.lock().expect("not poisoned");
        match hours.back_mut() {
            Some((last, count)) if *last == hour => *count += 1,
            _ => {
                hours.push_back((hour, 1));
                if hours.len() > Self::HOURS_KEPT {
                    hours.pop_front();
                }
            }
        }
    }

    /// Refusals in the hours that start at or after `since` (rounded down
    /// to its hour), and the hour of the latest.
    pub fn since(&self, since: OffsetDateTime) -> (u64, Option<OffsetDateTime>) {
        let from = since.unix_timestamp().div_euclid(3600);
        let hours = self.hours.lock().expect("not poisoned");
        let count = hours
            .iter()
            .filter(|(hour, _)| *hour >= from)
            .map(|(_, count)| count)
            .sum();
        let latest = hours
            .back()
            .and_then(|(hour, _)| OffsetDateTime::from_unix_timestamp(hour * 3600).ok());
        (count, latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/signature-vectors.json")).unwrap()
    }

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(secrets.iter().map(|s| Secret::new(*s)).collect())
    }

    #[test]
    fn every_published_vector_verifies() {
        let fixture = fixture();
        let verifier = verifier(&[fixture["secret"].as_str().unwrap()]);
        let vectors = fixture["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 6);
        for vector in vectors {
            let body = vector["body"].as_str().unwrap().as_bytes();
            let signature = vector["signature"].as_str().unwrap();
            assert_eq!(
                verifier.verify(Some(signature.as_bytes()), body),
                Ok(()),
                "vector {}",
                vector["name"]
            );
        }
    }

    #[test]
    fn sign_reproduces_the_published_raw_body_signatures() {
        let fixture = fixture();
        let secret = Secret::new(fixture["secret"].as_str().unwrap());
        for vector in fixture["vectors"].as_array().unwrap() {
            if vector["raw_equals_compact"] == Value::Bool(true) {
                let body = vector["body"].as_str().unwrap().as_bytes();
                assert_eq!(sign(&secret, body), vector["signature"].as_str().unwrap());
            }
        }
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_is_a_mismatch() {
        let secret = Secret::new("whsec_test_unit");
        let body = br#"{"id":"evt_1","type":"x"}"#;
        let signature = sign(&secret, body);
        let verifier = Verifier::new(vec![secret]);
        assert_eq!(
            verifier.verify(Some(signature.as_bytes()), br#"{"id":"evt_2","type":"x"}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            Verifier::new(vec![Secret::new("whsec_other")])
                .verify(Some(signature.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier.verify(Some(signature.as_bytes()), b"not json"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_active_secret_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let signature = sign(&Secret::new("whsec_new"), body);
        let verifier = verifier(&["whsec_old", "whsec_new"]);
        assert_eq!(verifier.verify(Some(signature.as_bytes()), body), Ok(()));
    }

    #[test]
    fn header_shape_is_checked_before_any_hashing() {
        let verifier = verifier(&["whsec_x"]);
        assert_eq!(verifier.verify(None, b"{}"), Err(SignatureError::Missing));
        for bad in [
            "",
            "abc",
            "zz",
            &"a".repeat(63),
            &"a".repeat(66),
            &"g".repeat(64),
        ] {
            assert_eq!(
                verifier.verify(Some(bad.as_bytes()), b"{}"),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uppercase_hex_is_the_same_signature() {
        let secret = Secret::new("whsec_x");
        let signature = sign(&secret, b"{}").to_uppercase();
        assert_eq!(
            Verifier::new(vec![secret]).verify(Some(signature.as_bytes()), b"{}"),
            Ok(())
        );
    }
}
