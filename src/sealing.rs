//! Patient data sealed at rest under the operator's keys.
//!
//! `encryption_keys` lists keys as `ID:BASE64` (32 random bytes each). The
//! first seals; every listed key opens. A value is sealed with
//! AES-256-GCM under a fresh random 96-bit nonce into nonce, ciphertext
//! and tag ([`Sealed`]), kept as bytes (payloads) or as their base64 in a
//! text column (MRNs, [`Kept`]), with the key's id stored beside it. The
//! associated data names the value's place (which column of which row)
//! and the key id, so a sealed value copied onto another row, or given
//! another key id, fails to open instead of showing one patient's data on
//! another's job.
//!
//! Error messages name key ids and list positions, never key material.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
const NONCE_BYTES: usize = 12;
/// Longest key id: ids are stored beside every sealed value.
pub const MAX_KEY_ID_LEN: usize = 32;

/// The operator's keys, in the order configured: the first seals.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

#[derive(Clone)]
struct Key {
    id: Arc<str>,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Why `encryption_keys` cannot be used. Never quotes a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("entry {position} must look like ID:BASE64 (an id, a colon, the key in base64)")]
    Shape { position: usize },
    #[error(
        "entry {position}: the key id must be 1 to {MAX_KEY_ID_LEN} letters, digits, `-`, `_` or `.`"
    )]
    BadId { position: usize },
    #[error("entry {position} (key id {id}): the key is not valid base64")]
    NotBase64 { position: usize, id: String },
    #[error("entry {position} (key id {id}): the key must be {KEY_BYTES} bytes, not {length}")]
    Length {
        position: usize,
        id: String,
        length: usize,
    },
    #[error("key id {id} is listed twice")]
    Repeated { id: String },
}

/// A value sealed under `key_id`: nonce, ciphertext and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Arc<str>,
    pub bytes: Vec<u8>,
}

impl Sealed {
    /// The form a text column keeps it in.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }
}

/// A text value as it is kept: the base64 of its [`Sealed`] form under
/// `key_id`, or as given when no key is configured (`key_id` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub text: String,
    pub key_id: Option<Arc<str>>,
}

/// Where a sealed value lives: its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    /// `jobs.patient_mrn` of the job (patient_note_id, job_id).
    Mrn {
        patient_note_id: &'a str,
        job_id: &'a str,
    },
    /// The stored payload of the event with this id.
    Payload { event_id: &'a str },
}

impl Place<'_> {
    /// Each part length-prefixed, so no two places (and key ids) share
    /// associated data whatever bytes their ids hold.
    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        let parts: &[&str] = match self {
            Place::Mrn {
                patient_note_id,
                job_id,
            } => &["jobs.patient_mrn", patient_note_id, job_id, key_id],
            Place::Payload { event_id } => &["payload", event_id, key_id],
        };
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
        for part in parts {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        data
    }
}

/// Why a kept value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("a value is sealed under key id {0}, which encryption_keys does not list")]
    UnknownKey(String),
    #[error(
        "a value sealed under key id {0} does not open: it was changed, moved from another row, or sealed under another key of that id"
    )]
    Damaged(String),
}

impl OpenError {
    pub fn key_id(&self) -> &str {
        match self {
            Self::UnknownKey(id) | Self::Damaged(id) => id,
        }
    }
}

impl Keyring {
    /// Reads `encryption_keys`. An empty list seals nothing.
    pub fn parse(entries: &[Secret]) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let position = index + 1;
            let (id, material) = entry
                .expose()
                .trim()
                .split_once(':')
                .ok_or(KeyError::Shape { position })?;
            check_id(id).map_err(|()| KeyError::BadId { position })?;
            let bytes = STANDARD
                .decode(material.trim())
                .map_err(|_| KeyError::NotBase64 {
                    position,
                    id: id.to_owned(),
                })?;
            if bytes.len() != KEY_BYTES {
                return Err(KeyError::Length {
                    position,
                    id: id.to_owned(),
                    length: bytes.len(),
                });
            }
            if keys.iter().any(|key| &*key.id == id) {
                return Err(KeyError::Repeated { id: id.to_owned() });
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).expect("the length was checked");
            keys.push(Key {
                id: id.into(),
                cipher,
            });
        }
        Ok(Self { keys })
    }

    /// A new key line for `encryption_keys`: `ID:BASE64` of 32 bytes from
    /// the operating system's generator.
    pub fn generate(id: &str) -> Result<String, KeyError> {
        check_id(id).map_err(|()| KeyError::BadId { position: 1 })?;
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(|_| KeyError::Shape { position: 1 })?;
        Ok(format!("{id}:{}", STANDARD.encode(key)))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key that seals, if any.
    pub fn sealing_id(&self) -> Option<&str> {
        self.keys.first().map(|key| &*key.id)
    }

    /// Every configured key id, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| &*key.id)
    }

    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|key| &*key.id == id)
    }

    /// `value` sealed under the first key for `place`; `None` without keys.
    pub fn seal(&self, place: Place<'_>, value: &[u8]) -> Option<Sealed> {
        let key = self.keys.first()?;
        let nonce = fresh_nonce();
        let mut bytes = Vec::with_capacity(NONCE_BYTES + value.len() + 16);
        bytes.extend_from_slice(&nonce);
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &place.associated_data(&key.id),
                },
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        bytes.extend_from_slice(&sealed);
        Some(Sealed {
            key_id: key.id.clone(),
            bytes,
        })
    }

    /// The text `bytes` (a [`Sealed`] form under `key_id`) holds at `place`.
    pub fn open_sealed(
        &self,
        place: Place<'_>,
        key_id: &str,
        bytes: &[u8],
    ) -> Result<String, OpenError> {
        let key = self
            .keys
            .iter()
            .find(|key| &*key.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_owned()))?;
        let damaged = || OpenError::Damaged(key_id.to_owned());
        if bytes.len() < NONCE_BYTES {
            return Err(damaged());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &place.associated_data(key_id),
                },
            )
            .map_err(|_| damaged())?;
        String::from_utf8(plain).map_err(|_| damaged())
    }

    /// `value` as a text column keeps it at `place`: the base64 of its
    /// sealed form under the first key, or as it is when there is none.
    pub fn keep(&self, place: Place<'_>, value: String) -> Kept {
        match self.seal(place, value.as_bytes()) {
            Some(sealed) => Kept {
                text: sealed.to_base64(),
                key_id: Some(sealed.key_id),
            },
            None => Kept {
                text: value,
                key_id: None,
            },
        }
    }

    /// The value a text column keeps at `place`: `text` itself when
    /// `key_id` is `None` (kept before any key was configured), else
    /// opened under that key.
    pub fn open(
        &self,
        place: Place<'_>,
        key_id: Option<&str>,
        text: String,
    ) -> Result<String, OpenError> {
        let Some(key_id) = key_id else {
            return Ok(text);
        };
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| OpenError::Damaged(key_id.to_owned()))?;
        self.open_sealed(place, key_id, &bytes)
    }
}

fn check_id(id: &str) -> Result<(), ()> {
    let fits = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits { Ok(()) } else { Err(()) }
}

/// Nonces drawn from the operating system in blocks, so sealing a value
/// costs no system call of its own. Each nonce is used once; random
/// 96-bit nonces stay safe for 2^32 values a key (NIST SP 800-38D), which
/// is why keys are rotated (docs/operations.md).
fn fresh_nonce() -> [u8; NONCE_BYTES] {
    const BLOCK: usize = NONCE_BYTES * 64;
    thread_local! {
        static DRAWN: RefCell<([u8; BLOCK], usize)> = const { RefCell::new(([0; BLOCK], BLOCK)) };
    }
    DRAWN.with_borrow_mut(|(block, used)| {
        if *used == BLOCK {
            getrandom::fill(block).expect("the operating system's random generator failed");
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&block[*used..*used + NONCE_BYTES]);
        // Never handed out twice, even if this block were read again.
        block[*used..*used + NONCE_BYTES].fill(0);
        *used += NONCE_BYTES;
        nonce
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn ring(lines: &[&str]) -> Keyring {
        Keyring::parse(&lines.iter().map(|l| Secret::new(*l)).collect::<Vec<_>>()).unwrap()
    }

    const JOB_A: Place<'static> = Place::Mrn {
        patient_note_id: "note-a",
        job_id: "1",
    };
    const JOB_B: Place<'static> = Place::Mrn {
        patient_note_id: "note-b",
        job_id: "2",
    };

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let old = ring(&[K1]);
        let both = ring(&[K2, K1]);
        let kept = old.keep(JOB_A, "MRN-1234".into());
        assert_eq!(kept.key_id.as_deref(), Some("k1"));
        assert!(!kept.text.contains("MRN-1234"));
        assert_eq!(
            both.open(JOB_A, Some("k1"), kept.text.clone()).unwrap(),
            "MRN-1234"
        );
        let resealed = both.keep(JOB_A, "MRN-1234".into());
        assert_eq!(resealed.key_id.as_deref(), Some("k2"));
        assert_eq!(
            old.open(JOB_A, Some("k2"), resealed.text),
            Err(OpenError::UnknownKey("k2".into()))
        );
    }

    #[test]
    fn each_sealing_draws_a_new_nonce() {
        let keys = ring(&[K1]);
        let seen: std::collections::HashSet<String> = (0..1000)
            .map(|_| keys.keep(JOB_A, "same".into()).text[..16].to_owned())
            .collect();
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn a_value_moved_to_another_row_or_key_id_does_not_open() {
        let keys = ring(&[K1, K2]);
        let kept = keys.keep(JOB_A, "MRN-1234".into());
        assert_eq!(
            keys.open(JOB_B, Some("k1"), kept.text.clone()),
            Err(OpenError::Damaged("k1".into()))
        );
        assert_eq!(
            keys.open(
                Place::Payload { event_id: "1" },
                Some("k1"),
                kept.text.clone()
            ),
            Err(OpenError::Damaged("k1".into()))
        );
        assert_eq!(
            keys.open(JOB_A, Some("k2"), kept.text.clone()),
            Err(OpenError::Damaged("k2".into()))
        );
        let mut flipped = STANDARD.decode(&kept.text).unwrap();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            keys.open(JOB_A, Some("k1"), STANDARD.encode(flipped))
                .is_err()
        );
        assert!(keys.open(JOB_A, Some("k1"), "not base64!".into()).is_err());
    }

    #[test]
    fn without_keys_values_are_kept_and_read_as_they_are() {
        let none = Keyring::default();
        let kept = none.keep(JOB_A, "MRN-1234".into());
        assert_eq!(
            kept,
            Kept {
                text: "MRN-1234".into(),
                key_id: None
            }
        );
        assert_eq!(none.open(JOB_A, None, kept.text).unwrap(), "MRN-1234");
        // A value kept in the clear reads back once keys exist, too.
        assert_eq!(ring(&[K1]).open(JOB_A, None, "x".into()).unwrap(), "x");
    }

    #[test]
    fn bad_key_lists_are_refused_without_quoting_the_key() {
        let material = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        for (lines, expected) in [
            (vec![material], KeyError::Shape { position: 1 }),
            (vec![K1, "bad id:AAAA"], KeyError::BadId { position: 2 }),
            (
                vec!["k3:not base64!"],
                KeyError::NotBase64 {
                    position: 1,
                    id: "k3".into(),
                },
            ),
            (
                vec!["k3:AAECAwQFBgcICQoLDA0ODw=="],
                KeyError::Length {
                    position: 1,
                    id: "k3".into(),
                    length: 16,
                },
            ),
            (vec![K1, K1], KeyError::Repeated { id: "k1".into() }),
        ] {
            let lines: Vec<Secret> = lines.into_iter().map(Secret::new).collect();
            let error = Keyring::parse(&lines).unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.to_string().contains("AAECAwQF"), "{error}");
        }
    }

    #[test]
    fn a_generated_key_line_reads_back() {
        let line = Keyring::generate("2026-12").unwrap();
        let keys = ring(&[&line]);
        assert_eq!(keys.sealing_id(), Some("2026-12"));
        assert_ne!(line, Keyring::generate("2026-12").unwrap());
        assert!(Keyring::generate("no spaces").is_err());
    }
}
