//! `rotate-keys`: moves every stored MRN and payload onto the first key of
//! `encryption_keys`, while the service runs.
//!
//! 1. A pass over the jobs, then the event log, in key order, a page at a
//!    time: each value sealed under another key, or kept unsealed, is
//!    opened and sealed again under the first key, and replaced only if
//!    its row still holds what was read (a delivery may have rewritten it
//!    meanwhile, under the key its process seals with). Values already
//!    under the first key are passed over, so a run cut short resumes at
//!    no cost: run it again.
//! 2. Each other key id in the registry is retired once no process has
//!    recorded sealing under it for `QUIET_AFTER`: every replica has been
//!    given the new key list. Until then it waits (up to `wait`).
//! 3. A second pass takes any value a replica sealed under an old key
//!    before it stopped using it.
//!
//! After it, the old keys can be removed from `encryption_keys`.

use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::store::Store;
use crate::store::sealing::{KeptMrn, KeptPayload, QUIET_AFTER, ResealPage, Resealed};

/// Rows read and re-sealed per transaction.
const PAGE: u32 = 500;
/// Between two looks at the registry while waiting for replicas.
const POLL: Duration = Duration::from_secs(5);

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key everything is now sealed under.
    pub sealing_id: String,
    pub mrns: Tally,
    pub payloads: Tally,
    /// Key ids removed from the registry (no value uses them any more).
    pub retired: Vec<String>,
}

/// One kind of value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Sealed again under the first key.
    pub resealed: u64,
    /// Rewritten by a delivery while read; left as the delivery wrote it.
    pub changed_meanwhile: u64,
}

/// Where a rotation is, for a progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Resealed { mrns: u64, payloads: u64 },
    Waiting { key_id: String, seen_secs_ago: u64 },
}

/// Runs a rotation (see the module's documentation). A value that does
/// not open stops it with an error naming its row and key id (never the
/// value); nothing is retired then.
pub async fn rotate(
    store: &Store,
    wait: Duration,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Rotation> {
    let sealing_id = store
        .keyring()
        .sealing_id()
        .ok_or_else(|| anyhow!("encryption_keys is empty: rotate-keys seals under its first key"))?
        .to_owned();
    let mut rotation = Rotation {
        sealing_id: sealing_id.clone(),
        ..Rotation::default()
    };
    pass(store, &mut rotation, &mut progress).await?;

    let deadline = tokio::time::Instant::now() + wait;
    for (key_id, _) in store.sealing_keys().await? {
        if key_id == sealing_id {
            continue;
        }
        loop {
            let quiet_since = crate::clock::ns_ago(QUIET_AFTER);
            if store.retire_sealing_key(&key_id, quiet_since).await? {
                rotation.retired.push(key_id.clone());
                break;
            }
            let last = store
                .sealing_keys()
                .await?
                .into_iter()
                .find(|(id, _)| *id == key_id);
            let Some((_, last_ns)) = last else { break };
            let seen_secs_ago =
                u64::try_from((crate::clock::now_ns() - last_ns) / 1_000_000_000).unwrap_or(0);
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "a running process still seals under key id {key_id} (recorded {seen_secs_ago} s ago): \
                     give every replica encryption_keys with {sealing_id} first, restart them, and run rotate-keys again"
                );
            }
            progress(&Progress::Waiting {
                key_id: key_id.clone(),
                seen_secs_ago,
            });
            tokio::time::sleep(POLL).await;
        }
    }
    pass(store, &mut rotation, &mut progress).await?;
    Ok(rotation)
}

/// One pass over the MRNs, then the payloads.
async fn pass(
    store: &Store,
    rotation: &mut Rotation,
    progress: &mut impl FnMut(&Progress),
) -> anyhow::Result<()> {
    let keys = store.keyring();
    let sealing_id = rotation.sealing_id.clone();
    let mut after = None;
    loop {
        let page = store
            .mrns_to_reseal(ResealPage {
                sealing_id: &sealing_id,
                after: after.clone(),
                limit: PAGE,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.patient_note_id.clone(), last.job_id.clone()));
        let mut resealed: Vec<Resealed<KeptMrn>> = Vec::with_capacity(page.len());
        for row in page {
            let opened = keys
                .open(row.place(), row.key_id.as_deref(), row.text.clone())
                .map_err(|error| {
                    anyhow!(
                        "the MRN of job {} (patient note {}): {error}",
                        row.job_id,
                        row.patient_note_id
                    )
                })?;
            let sealed = keys
                .seal(row.place(), opened.as_bytes())
                .expect("a keyring with a sealing key seals");
            resealed.push(Resealed { sealed, was: row });
        }
        let read = resealed.len() as u64;
        let replaced = store.reseal_mrns(resealed).await?;
        rotation.mrns.resealed += replaced;
        rotation.mrns.changed_meanwhile += read - replaced;
        progress(&Progress::Resealed {
            mrns: rotation.mrns.resealed,
            payloads: rotation.payloads.resealed,
        });
    }

    let mut after = None;
    loop {
        let page = store
            .payloads_to_reseal(ResealPage {
                sealing_id: &sealing_id,
                after,
                limit: PAGE,
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        let mut resealed: Vec<Resealed<KeptPayload>> = Vec::with_capacity(page.len());
        for row in page {
            let opened = row
                .opened(keys)
                .map_err(|error| anyhow!("the payload of event {}: {error}", row.event_id))?;
            let sealed = keys
                .seal(row.place(), opened.as_bytes())
                .expect("a keyring with a sealing key seals");
            resealed.push(Resealed { sealed, was: row });
        }
        let read = resealed.len() as u64;
        let replaced = store.reseal_payloads(resealed).await?;
        rotation.payloads.resealed += replaced;
        rotation.payloads.changed_meanwhile += read - replaced;
        progress(&Progress::Resealed {
            mrns: rotation.mrns.resealed,
            payloads: rotation.payloads.resealed,
        });
    }
    Ok(())
}
