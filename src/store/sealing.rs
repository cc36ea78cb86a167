//! Patient data as the store keeps it, whichever engine runs: each
//! delivery's payload as `payload_storage` keeps it, payloads and MRNs
//! sealed under the first configured key (sealed on the caller's thread,
//! before the writer), and the registry of the key ids values may be
//! sealed under (`sealing_keys`).
//!
//! The registry is what makes a missing key a refusal at start rather
//! than an error on some later read. Every process records the key it
//! seals under before it writes and again every [`ANNOUNCE_EVERY`]; a key
//! id leaves the registry only when `rotate-keys` has moved every value
//! off it and no process has recorded it for [`QUIET_AFTER`] (so none
//! still seals under it). So every id a sealed value names is in the
//! registry, and a start whose keys lack one of them is refused.

use std::time::Duration;

use super::{Delivery, Store, StoreError};
use crate::domain::Meaning;
use crate::sealing::{self, Place};

/// How often a process records the key it seals under.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// How long after the last record of a key id no process is taken to
/// seal under it any more: three records missed.
pub const QUIET_AFTER: Duration = Duration::from_secs(90);

/// What a delivery stores of its patient data.
pub(super) struct Kept {
    /// The payload, as `payload_storage` keeps it, sealed when a key is set.
    pub payload: StoredPayload,
    /// The job's MRN, sealed when a key is set.
    pub mrn: Option<sealing::Kept>,
}

/// A payload as it is stored: as text (empty for none), or sealed, as
/// bytes in a column of their own (no base64: smaller rows, no encoding).
pub(super) enum StoredPayload {
    Text(String),
    Sealed(sealing::Sealed),
}

impl StoredPayload {
    /// The text column's value: empty when sealed.
    pub(super) fn text(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Sealed(_) => "",
        }
    }

    /// The sealed bytes, if sealed.
    pub(super) fn sealed(&self) -> Option<&[u8]> {
        match self {
            Self::Text(_) => None,
            Self::Sealed(sealed) => Some(&sealed.bytes),
        }
    }

    pub(super) fn key_id(&self) -> Option<&str> {
        match self {
            Self::Text(_) => None,
            Self::Sealed(sealed) => Some(&sealed.key_id),
        }
    }
}

impl Kept {
    /// Takes the delivery's payload (its raw body is not needed after
    /// this) and seals what is kept.
    pub(super) fn of(delivery: &mut Delivery, common: &super::Common) -> Self {
        let body = std::mem::take(&mut delivery.payload);
        let envelope = &delivery.envelope;
        let located = envelope.patient_data.as_deref();
        let changed = match common.payload_storage.kept(&body, located) {
            std::borrow::Cow::Borrowed(same) if same.len() == body.len() => None,
            other => Some(other.into_owned()),
        };
        let kept = changed.unwrap_or(body);
        let place = Place::Payload {
            event_id: &envelope.event_id,
        };
        let payload = match kept.is_empty() {
            true => None,
            false => common.keyring.seal(place, kept.as_bytes()),
        }
        .map_or(StoredPayload::Text(kept), StoredPayload::Sealed);
        let mrn = match &envelope.meaning {
            Meaning::Outcome(job) => job.patient_mrn.as_ref().map(|mrn| {
                common.keyring.keep(
                    Place::Mrn {
                        patient_note_id: &job.patient_note_id,
                        job_id: &job.job_id,
                    },
                    mrn.clone(),
                )
            }),
            _ => None,
        };
        Self { payload, mrn }
    }
}

/// The database holds values sealed under a key id the configuration does
/// not list: the service would fail on every read of them, so it does not
/// start (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum MissingKey {
    #[error(
        "encryption_keys does not list key id {0}, which the database holds sealed values under; add that key (rotate-keys can then move the values to another)"
    )]
    Unlisted(String),
    #[error(
        "encryption_keys is empty, but the database holds values sealed under key id {0}; configure that key"
    )]
    NoKeys(String),
}

/// Whether opening failed with [`MissingKey`].
pub fn missing_key(error: &anyhow::Error) -> Option<&MissingKey> {
    error.downcast_ref::<MissingKey>()
}

/// Refuses a key set that lacks a key id the database needs, then records
/// the sealing key (before any write of this process can seal under it).
pub(super) async fn check_and_announce(store: &Store) -> anyhow::Result<()> {
    let keyring = store.keyring();
    let registered = store.sealing_keys().await?;
    if let Some(missing) = registered.iter().find(|(id, _)| !keyring.has(id)) {
        let id = missing.0.clone();
        return Err(if keyring.is_empty() {
            MissingKey::NoKeys(id)
        } else {
            MissingKey::Unlisted(id)
        }
        .into());
    }
    store.announce_sealing_key().await?;
    Ok(())
}

impl Store {
    /// Records, for `rotate-keys` and other processes' starts, that this
    /// process seals under its first key (nothing without keys).
    pub async fn announce_sealing_key(&self) -> Result<(), StoreError> {
        match self.keyring().sealing_id() {
            Some(id) => self.record_sealing_key(id, crate::clock::now_ns()).await,
            None => Ok(()),
        }
    }
}

/// A job's kept MRN, as `rotate-keys` reads it.
#[derive(Debug, Clone)]
pub struct KeptMrn {
    pub patient_note_id: String,
    pub job_id: String,
    pub text: String,
    pub key_id: Option<String>,
}

impl KeptMrn {
    pub fn place(&self) -> Place<'_> {
        Place::Mrn {
            patient_note_id: &self.patient_note_id,
            job_id: &self.job_id,
        }
    }
}

/// An event's kept payload, as `rotate-keys` reads it: text (unsealed),
/// or sealed bytes under `key_id`.
#[derive(Debug, Clone)]
pub struct KeptPayload {
    /// Its event's place in the log.
    pub seq: i64,
    pub event_id: String,
    pub text: String,
    pub sealed: Option<Vec<u8>>,
    pub key_id: Option<String>,
}

impl KeptPayload {
    pub fn place(&self) -> Place<'_> {
        Place::Payload {
            event_id: &self.event_id,
        }
    }

    /// The payload's text, opened if sealed.
    pub fn opened(&self, keys: &sealing::Keyring) -> Result<String, sealing::OpenError> {
        match (&self.key_id, &self.sealed) {
            (Some(key_id), Some(bytes)) => keys.open_sealed(self.place(), key_id, bytes),
            (Some(key_id), None) => Err(sealing::OpenError::Damaged(key_id.clone())),
            (None, _) => Ok(self.text.clone()),
        }
    }
}

/// A value sealed again: replaces `was` only if the row still holds it
/// (a delivery may have changed the row meanwhile).
#[derive(Debug, Clone)]
pub struct Resealed<T> {
    pub was: T,
    pub sealed: sealing::Sealed,
}

/// Which rows a page of `rotate-keys` reads: values not sealed under
/// `sealing_id`, after `after`, at most `limit`.
#[derive(Debug, Clone)]
pub struct ResealPage<'a, K> {
    pub sealing_id: &'a str,
    pub after: Option<K>,
    pub limit: u32,
}
