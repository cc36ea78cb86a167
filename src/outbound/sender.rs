//! The sender of one endpoint. Every replica runs one per endpoint; only
//! the holder of the endpoint's lease sends, so the endpoint sees one
//! sender at a time. Each round it makes messages of the changes the feed
//! gained (`store::outbound`), then sends the messages due, a few at once
//! but never two of one job: a job's next message waits until the one
//! before it is delivered or has failed for good. Each attempt is signed
//! afresh (Standard Webhooks); its outcome is recorded before the next
//! round, and a message not delivered is tried again on the schedule, with
//! the same `webhook-id`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::attempt::{self, Attempt};
use super::schedule::{self, RetrySchedule};
use crate::config::OutboundEndpoint;
use crate::monitoring;
use crate::store::outbound::{AttemptRecord, NextStep, OutboundMessage};
use crate::store::{JobState, Store, StoreError};

/// How long a lease lasts: a replica that stops sending (killed, cut off)
/// hands its endpoints to another within this.
const LEASE: Duration = Duration::from_secs(30);
/// How often a replica without the lease asks for it.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// Most messages sent at once.
const AT_ONCE: u32 = 16;
/// Longest a round waits for the feed to move when nothing is due: retries
/// come due at most this late.
const IDLE: Duration = Duration::from_secs(1);
/// Messages are made at least this often, feed signal or not.
const MAKE_EVERY: Duration = Duration::from_secs(5);

/// What every endpoint's sender shares.
#[derive(Clone)]
pub struct Senders {
    pub store: Store,
    pub attempts: Arc<attempt::Sender>,
    pub schedule: RetrySchedule,
    /// This process's name in the leases.
    pub holder: String,
}

/// Sends `endpoint`'s messages until the store stops.
pub async fn run(senders: Senders, endpoint: OutboundEndpoint) {
    let Senders {
        store,
        attempts,
        schedule,
        holder,
    } = senders;
    let name = endpoint.name.clone();
    let endpoint = Arc::new(endpoint);
    let mut moved = store.feed().watch();
    // The lease is renewed once half of it has passed, not every round: a
    // quiet endpoint then costs no write a second.
    let mut held_until = 0i64;
    let mut made_at: Option<tokio::time::Instant> = None;
    loop {
        let now = crate::clock::now_ns();
        if now >= held_until.saturating_sub(LEASE.as_nanos() as i64 / 2) {
            let until = now.saturating_add(LEASE.as_nanos() as i64);
            match store.take_outbound_lease(&name, &holder, now, until).await {
                Ok(true) => held_until = until,
                Ok(false) => {
                    held_until = 0;
                    tokio::time::sleep(LEASE_RETRY).await;
                    continue;
                }
                Err(StoreError::Stopped) => return,
                Err(error) => {
                    held_until = 0;
                    tracing::warn!(endpoint = %name, error = %error, "taking the outgoing webhooks' lease failed; retrying");
                    tokio::time::sleep(LEASE_RETRY).await;
                    continue;
                }
            }
        }
        // Messages are made when the feed moved (here, or on another
        // replica), and now and then in case a signal was missed.
        let feed_moved = moved.has_changed().unwrap_or(true);
        if feed_moved {
            moved.borrow_and_update();
        }
        let make = feed_moved || made_at.is_none_or(|at| at.elapsed() >= MAKE_EVERY);
        if make {
            made_at = Some(tokio::time::Instant::now());
        }
        match round(&store, &attempts, &schedule, &endpoint, make).await {
            Ok(0) => {
                let _ = tokio::time::timeout(IDLE, moved.changed()).await;
            }
            Ok(_) => {}
            Err(StoreError::Stopped) => return,
            Err(error) => {
                tracing::warn!(endpoint = %name, error = %error, "sending outgoing webhooks failed; retrying");
                tokio::time::sleep(IDLE).await;
            }
        }
    }
}

/// One round: messages made, those due sent and recorded. Returns how many
/// were sent.
async fn round(
    store: &Store,
    attempts: &Arc<attempt::Sender>,
    schedule: &RetrySchedule,
    endpoint: &Arc<OutboundEndpoint>,
    make: bool,
) -> Result<usize, StoreError> {
    if make {
        store
            .make_outbound_messages(&endpoint.name, endpoint.types.clone())
            .await?;
    }
    let due = store.due_outbound(&endpoint.name, AT_ONCE).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut sends = tokio::task::JoinSet::new();
    for message in due {
        let (store, attempts, endpoint) = (store.clone(), attempts.clone(), endpoint.clone());
        let schedule = schedule.clone();
        sends.spawn(async move { send(&store, &attempts, &schedule, &endpoint, message).await });
    }
    let mut records = Vec::new();
    for result in sends.join_all().await {
        records.extend(result?);
    }
    let sent = records.len();
    store.settle_outbound(&endpoint.name, records).await?;
    Ok(sent)
}

/// One attempt at `message`, and what follows from it. `None` when the job
/// could not be read (no attempt was made; the next round tries again).
async fn send(
    store: &Store,
    attempts: &attempt::Sender,
    schedule: &RetrySchedule,
    endpoint: &OutboundEndpoint,
    message: OutboundMessage,
) -> Result<Option<AttemptRecord>, StoreError> {
    let job = match store.jobs_by_job_id(&message.job_id).await {
        Ok(jobs) => jobs
            .into_iter()
            .find(|job| job.patient_note_id == message.patient_note_id),
        Err(StoreError::Stopped) => return Err(StoreError::Stopped),
        Err(error) => {
            tracing::warn!(endpoint = %endpoint.name, job_id = %message.job_id, error = %error, "reading a job for its outgoing webhook failed");
            return Ok(None);
        }
    };
    let mrn = job.as_ref().and_then(|job| job.patient_mrn.clone());
    let body = body(&message, job, endpoint.phi);
    let now = time::OffsetDateTime::now_utc();
    let outcome = attempts
        .send(
            &endpoint.url,
            &endpoint.key,
            &message.id,
            &body,
            now.unix_timestamp(),
        )
        .await;
    monitoring::outbound_attempt(&endpoint.name, &outcome);
    let at_ns = crate::clock::unix_ns(now);
    let attempts_made = message.attempts.saturating_add(1);
    let (status, error) = match outcome {
        Attempt::Delivered { status } => (Some(status), None),
        Attempt::Refused { status, excerpt } => {
            // What the app answered may echo what it was sent.
            let excerpt = match (&mrn, endpoint.phi) {
                (Some(mrn), true) => attempt::redact(&excerpt, mrn),
                _ => excerpt,
            };
            (Some(status), Some(excerpt))
        }
        Attempt::Unreachable { reason } => (None, Some(reason)),
    };
    let delivered = error.is_none();
    let next = if delivered {
        monitoring::outbound_settled(&endpoint.name, true);
        NextStep::Delivered
    } else {
        match schedule.delay_before_retry(attempts_made, schedule::random_unit()) {
            Some(delay) => NextStep::RetryAt(at_ns.saturating_add(delay.as_nanos() as i64)),
            None => {
                monitoring::outbound_settled(&endpoint.name, false);
                tracing::warn!(endpoint = %endpoint.name, webhook_id = %message.id, attempts = attempts_made, "an outgoing webhook failed on every attempt; it is marked failed");
                NextStep::Failed
            }
        }
    };
    Ok(Some(AttemptRecord {
        id: message.id,
        at_ns,
        status,
        error,
        next,
    }))
}

/// The message's body: `type`, `timestamp` (when the change happened) and
/// `data`, the job's state as the status API shows it, with the change
/// (its feed cursor, kind and time). The MRN only for an endpoint that
/// takes patient data; never the note.
pub fn body(message: &OutboundMessage, job: Option<JobState>, phi: bool) -> Vec<u8> {
    let at = crate::clock::rfc3339(crate::clock::from_unix_ns(message.change_at_ns));
    let mut data = match job {
        Some(mut job) => {
            if !phi {
                job.patient_mrn = None;
            }
            serde_json::to_value(job).unwrap_or_else(|_| json!({}))
        }
        None => json!({
            "patient_note_id": message.patient_note_id,
            "job_id": message.job_id,
        }),
    };
    if let Value::Object(fields) = &mut data {
        if !phi {
            fields.remove("patient_mrn");
        }
        fields.insert(
            "change".into(),
            json!({
                "cursor": message.position.to_string(),
                "kind": message.kind,
                "at": at,
            }),
        );
    }
    serde_json::to_vec(&json!({
        "type": message.kind.webhook_type(),
        "timestamp": at,
        "data": data,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChangeKind;
    use crate::store::outbound::MessageState;
    use crate::store::{JobKey, JobState};

    fn message() -> OutboundMessage {
        OutboundMessage {
            id: "msg_1".into(),
            endpoint: "app".into(),
            position: 41,
            job_id: "12345".into(),
            patient_note_id: "pn_1".into(),
            kind: ChangeKind::Created,
            change_at_ns: 1_796_457_302_500_000_000,
            state: MessageState::Queued,
            attempts: 0,
            next_attempt_ns: 0,
            last_attempt_ns: None,
            last_status: None,
            last_error: None,
            settled_ns: None,
        }
    }

    fn job() -> JobState {
        JobState {
            patient_note_id: "pn_1".into(),
            job_id: "12345".into(),
            status: "created".into(),
            overdue: false,
            submitted_at: None,
            emr_note_id: Some("emr_1".into()),
            failure_reason: None,
            reasons: None,
            patient_mrn: Some("MRN-PHI-1".into()),
            mrn_sealed_under: None,
            location_id: Some("loc-1".into()),
            access_token_reference_id: None,
            deciding_event_id: Some("evt_1".into()),
            deciding_event_created: None,
            first_received_at: None,
            last_received_at: None,
            key: JobKey {
                created_ns: 0,
                patient_note_id: "pn_1".into(),
                job_id: "12345".into(),
            },
        }
    }

    #[test]
    fn the_body_carries_the_type_the_change_and_the_job_and_the_mrn_only_with_phi() {
        let body: Value = serde_json::from_slice(&body(&message(), Some(job()), false)).unwrap();
        assert_eq!(body["type"], "job.created");
        assert_eq!(body["timestamp"], "2026-12-05T07:55:02.5Z");
        assert_eq!(body["data"]["emr_note_id"], "emr_1");
        assert_eq!(
            body["data"]["change"],
            json!({"cursor": "41", "kind": "created", "at": "2026-12-05T07:55:02.5Z"})
        );
        assert!(body["data"].get("patient_mrn").is_none(), "{body}");
        let with_phi: Value =
            serde_json::from_slice(&super::body(&message(), Some(job()), true)).unwrap();
        assert_eq!(with_phi["data"]["patient_mrn"], "MRN-PHI-1");
        // A job not found still names itself.
        let bare: Value = serde_json::from_slice(&super::body(&message(), None, false)).unwrap();
        assert_eq!(bare["data"]["job_id"], "12345");
    }
}
